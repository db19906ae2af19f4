"""The permissions the operator uses, declared next to the code that needs them.

The Helm chart's ClusterRole/Role is generated from ``RULES`` (``python -m
edgequant.controller.rbac``), so the two never drift. No Secrets: credentials
reach quantizer pods through secretKeyRef, which the kubelet resolves.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from edgequant.api import v1alpha1 as api

RULES: list[dict[str, Any]] = [
    # Watch QuantizationJobs (handlers; patch: kopf touches one to wake a delayed retry) and write their status (KubeClient.patch_status).
    {"apiGroups": [api.GROUP], "resources": [api.PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [api.GROUP], "resources": [f"{api.PLURAL}/status"], "verbs": ["get", "patch"]},
    # Run quantizers: KubeClient.create_job / delete_job / patch_job_spec (suspend, ttlSecondsAfterFinished), and watch them.
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    # Read the worker's termination message (kube.pods_of_job) and watch pod phases.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    # Events on every transition (kopf.event).
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]

#: kopf peering (leader election between replicas): cluster-wide or per watched namespace.
PEERING_CLUSTER_WIDE: list[dict[str, Any]] = [
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["get", "list", "watch", "patch"]},
]
PEERING_NAMESPACED: list[dict[str, Any]] = [
    {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["get", "list", "watch", "patch"]},
]


def as_yaml() -> str:
    return yaml.safe_dump(
        {"servedNamespaces": RULES, "peeringClusterWide": PEERING_CLUSTER_WIDE, "peeringNamespaced": PEERING_NAMESPACED},
        sort_keys=False,
    )


if __name__ == "__main__":
    sys.stdout.write(as_yaml())
