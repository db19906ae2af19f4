"""The permissions the operator uses, declared next to the code that needs them.

The Helm chart's ClusterRole/Role is generated from ``RULES`` (``python -m
edgequant.controller.rbac``), so the two never drift. No Secrets: credentials
reach quantizer pods through secretKeyRef, which the kubelet resolves.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from edgequant.api import sweep as sweep_api
from edgequant.api import v1alpha1 as api

RULES: list[dict[str, Any]] = [
    # Watch QuantizationJobs (handlers) and write their status (KubeClient.patch_status; patch: kopf touches one to wake a delayed retry); a sweep creates
    # one per cell (sweep.py).
    {"apiGroups": [api.GROUP], "resources": [api.PLURAL], "verbs": ["get", "list", "watch", "patch", "create"]},
    {"apiGroups": [api.GROUP], "resources": [f"{api.PLURAL}/status"], "verbs": ["get", "patch"]},
    # Watch QuantizationSweeps and write their status (sweep.py); their report Job is a batch Job like the others.
    {"apiGroups": [api.GROUP], "resources": [sweep_api.PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [api.GROUP], "resources": [f"{sweep_api.PLURAL}/status"], "verbs": ["get", "patch"]},
    # Jobs carry an ownerReference with blockOwnerDeletion (render.py): the OwnerReferencesPermissionEnforcement
    # admission plugin (OpenShift's default) lets only those who may update the owner's finalizers set it.
    {"apiGroups": [api.GROUP], "resources": [f"{api.PLURAL}/finalizers"], "verbs": ["update"]},
    # Run quantizers: KubeClient.create_job / delete_job / patch_job_spec (suspend, ttlSecondsAfterFinished), and watch them.
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    # Read the worker's termination message (kube.pods_of_job) and watch pod phases.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    # Events on every transition (kopf.event).
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]

#: With Kueue (settings.kueue): read the Workloads Kueue makes for queued Jobs, whose conditions say why they wait.
KUEUE: list[dict[str, Any]] = [
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["get", "list", "watch"]},
]

#: kopf peering (leader election between replicas): cluster-wide or per watched namespace.
PEERING_CLUSTER_WIDE: list[dict[str, Any]] = [
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["get", "list", "watch", "patch"]},
]
PEERING_NAMESPACED: list[dict[str, Any]] = [
    {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["get", "list", "watch", "patch"]},
]


def as_yaml() -> str:
    rules: str = yaml.safe_dump(
        {
            "servedNamespaces": RULES,
            "kueue": KUEUE,
            "peeringClusterWide": PEERING_CLUSTER_WIDE,
            "peeringNamespaced": PEERING_NAMESPACED,
        },
        sort_keys=False,
    )
    return rules


if __name__ == "__main__":
    sys.stdout.write(as_yaml())
