"""Render the batch/v1 Job for one generation of a QuantizationJob. Pure: no I/O, same input, same Job."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edgequant.api import exitcodes
from edgequant.api import v1alpha1 as api
from edgequant.api import worker_contract as contract
from edgequant.controller import naming, policy, queueing
from edgequant.controller.settings import OperatorSettings


@dataclass(frozen=True)
class Owner:
    """The parts of the QuantizationJob object the Job refers to."""

    name: str
    namespace: str
    uid: str
    generation: int


def wants_gpu(spec: api.QuantizationJobSpec) -> bool:
    accelerator = spec.resources.accelerator
    if accelerator is api.Accelerator.GPU:
        return True
    return accelerator is api.Accelerator.AUTO and spec.method.needs_gpu


def _resources(spec: api.QuantizationJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    requests: dict[str, str] = dict(settings.default_requests)
    limits: dict[str, str] = dict(settings.default_limits)
    if spec.resources.requests is not None:
        requests.update(spec.resources.requests.model_dump(exclude_none=True))
    if spec.resources.limits is not None:
        limits.update(spec.resources.limits.model_dump(exclude_none=True))
    requests.setdefault("ephemeral-storage", scratch_size(spec, settings))
    if wants_gpu(spec):
        count = str(spec.resources.gpus)
        requests[settings.gpu_resource] = count
        limits[settings.gpu_resource] = count
    return {"requests": requests, "limits": limits}


def scratch_size(spec: api.QuantizationJobSpec, settings: OperatorSettings) -> str:
    """The scratch emptyDir's sizeLimit, requested as ephemeral storage too (so the scheduler finds the disk)."""
    return spec.resources.scratch_size or settings.scratch_size


def worker_document(*, owner: Owner, spec: api.QuantizationJobSpec) -> dict[str, Any]:
    """What the spec variable (worker_contract.SPEC_ENV) carries: the spec wrapped with the name/namespace/generation the report shows."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": owner.name, "namespace": owner.namespace, "generation": owner.generation},
        # exclude_unset: the worker must still see what the spec left out, for spec.target to fill it (api/targets.py)
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True),
    }


def _env(
    spec: api.QuantizationJobSpec, owner: Owner, resources: dict[str, Any], scratch: str, settings: OperatorSettings
) -> list[dict[str, Any]]:
    document = worker_document(owner=owner, spec=spec)
    env: list[dict[str, Any]] = [
        {"name": contract.SPEC_ENV, "value": json.dumps(document, separators=(",", ":"), sort_keys=True)},
        {"name": contract.WORKDIR_ENV, "value": contract.SCRATCH_DIR},
        {"name": "TMPDIR", "value": contract.SCRATCH_DIR},
        {"name": "HOME", "value": contract.SCRATCH_DIR},
        {"name": contract.SCRATCH_LIMIT_ENV, "value": scratch},
        # The model runs in a child process without the storage keys; the parent moves objects (worker/sandbox.py).
        {"name": contract.SANDBOX_ENV, "value": contract.SANDBOX_ON},
        {"name": contract.S3_CONNECT_TIMEOUT_ENV, "value": f"{settings.s3_connect_timeout_seconds:g}"},
        {"name": contract.S3_READ_TIMEOUT_ENV, "value": f"{settings.s3_read_timeout_seconds:g}"},
        {"name": contract.S3_MAX_ATTEMPTS_ENV, "value": str(settings.s3_max_attempts)},
    ]
    if "memory" in resources["limits"]:
        # The worker sizes its analysis batches to its memory limit (without one it reads the cgroup, then a default).
        ref = {"containerName": naming.CONTAINER_NAME, "resource": "limits.memory"}
        env.append({"name": contract.MEMORY_BUDGET_ENV, "valueFrom": {"resourceFieldRef": ref}})
    secret = spec.storage.credentials_secret
    if secret is not None:
        keys = [
            ("AWS_ACCESS_KEY_ID", secret.access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", secret.secret_access_key_key),
        ]
        if secret.session_token_key:
            keys.append(("AWS_SESSION_TOKEN", secret.session_token_key))
        for var, key in keys:
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}})
    if spec.storage.ca_bundle is not None:
        env.append({"name": contract.CA_BUNDLE_ENV, "value": f"{contract.CA_BUNDLE_DIR}/{spec.storage.ca_bundle.key}"})
    return env


def _pod_failure_policy() -> dict[str, Any]:
    """Deliberate worker outcomes fail the Job at once; node disruptions never count as attempts."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": naming.CONTAINER_NAME,
                    "operator": "In",
                    "values": sorted(int(c) for c in exitcodes.NON_RETRIABLE),
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def _tolerations(spec: api.QuantizationJobSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    tolerations = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in spec.scheduling.tolerations]
    if wants_gpu(spec):
        tolerations.extend(t for t in settings.gpu_tolerations if t not in tolerations)
    return tolerations


def labels_for(owner: Owner, spec: api.QuantizationJobSpec) -> dict[str, str]:
    return {
        naming.LABEL_JOB: naming.label_value(owner.name),
        naming.LABEL_GENERATION: str(owner.generation),
        naming.LABEL_METHOD: spec.method.value,
        naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
        "app.kubernetes.io/name": "edgequant-quantizer",
    }


def render_job(*, owner: Owner, spec: api.QuantizationJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    """The complete batch/v1 Job manifest for this generation of the QuantizationJob."""
    labels = labels_for(owner, spec)
    scratch = scratch_size(spec, settings)
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {"sizeLimit": scratch}}]
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": contract.SCRATCH_DIR}]
    if spec.storage.ca_bundle is not None:
        volumes.append({"name": "ca-bundle", "configMap": {"name": spec.storage.ca_bundle.config_map}})
        mounts.append({"name": "ca-bundle", "mountPath": contract.CA_BUNDLE_DIR, "readOnly": True})

    resources = _resources(spec, settings)
    container: dict[str, Any] = {
        "name": naming.CONTAINER_NAME,
        "image": spec.execution.image or settings.image_for(spec.method),
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(contract.WORKER_COMMAND),
        "env": _env(spec, owner, resources, scratch, settings),
        "resources": resources,
        "volumeMounts": mounts,
        "terminationMessagePath": contract.TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "fsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    node_selector = dict(spec.scheduling.node_selector)
    if wants_gpu(spec):
        node_selector = {**settings.gpu_node_selector, **node_selector}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = _tolerations(spec, settings)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if spec.scheduling.affinity:
        pod_spec["affinity"] = spec.scheduling.affinity
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    service_account = spec.storage.service_account_name or settings.worker_service_account
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    # No Kubernetes API token unless the admin's policy says this ServiceAccount needs one: workload identity
    # (IRSA's projected token, GKE's metadata server) works without it.
    pod_spec["automountServiceAccountToken"] = policy.mounts_api_token(service_account, settings)

    job_spec: dict[str, Any] = {
        "backoffLimit": spec.execution.backoff_limit,
        "suspend": queueing.job_suspended_at_creation(spec.queue_name, suspend=spec.suspend),
        "podFailurePolicy": _pod_failure_policy(),
        "template": {
            "metadata": {"labels": labels, "annotations": {naming.ANNOTATION_JOB: owner.name}},
            "spec": pod_spec,
        },
    }
    deadline = spec.execution.active_deadline_seconds or settings.default_active_deadline_seconds
    if deadline:
        job_spec["activeDeadlineSeconds"] = deadline
    # No ttlSecondsAfterFinished here: the operator sets it once the status holds the result (reconcile.py), so a
    # Job that finishes while the operator is down is still there, with its result, when the operator is back.

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": naming.job_name(owner.name, owner.generation),
            "namespace": owner.namespace,
            "labels": {**labels, **queueing.queue_labels(spec.queue_name, suspend=spec.suspend)},
            "annotations": {"edgequant.io/spec-generation": str(owner.generation), naming.ANNOTATION_JOB: owner.name},
            "ownerReferences": [
                {
                    "apiVersion": api.API_VERSION,
                    "kind": api.KIND,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job_spec,
    }
