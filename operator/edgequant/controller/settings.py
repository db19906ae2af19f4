"""Operator settings, from flags or EDGEQUANT_OPERATOR_* environment variables (flags win)."""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgequant.api import v1alpha1 as api

ENV_PREFIX = "EDGEQUANT_OPERATOR_"

#: One quantizer image per method family in the method catalogue (``api/methods.py``).
DEFAULT_IMAGES: dict[str, str] = {f.value: f"ghcr.io/edgequant/quantizer-{f.value}:0.1.0" for f in api.MethodFamily}


class OperatorSettings(BaseModel):
    """Everything the operator can be told; one field per flag / env var."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty means all (cluster-wide)."
    )
    images: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_IMAGES),
        description="Quantizer image per method family (tflite, torch, onnx, tensorrt).",
    )
    image_pull_policy: str = Field("IfNotPresent", description="Pull policy of quantizer images.")
    default_requests: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "1", "memory": "2Gi"},
        description="Container requests when the spec gives none.",
    )
    default_limits: dict[str, str] = Field(
        default_factory=lambda: {"memory": "8Gi"}, description="Container limits when the spec gives none."
    )
    max_concurrent_jobs: int = Field(
        0,
        ge=0,
        description="Cap on quantizer Jobs running at once (0 = no cap); the rest wait with reason WaitingForCapacity.",
    )
    capacity_retry_seconds: float = Field(10.0, gt=0, description="How often a job waiting for capacity is retried.")
    peering_name: str | None = Field(
        None, description="kopf peering object for leader election between replicas; None runs standalone."
    )
    peering_priority: int | None = Field(
        None,
        ge=0,
        description="This replica's peering priority (the highest live one works, the others stand by); random when omitted, so replicas never tie.",
    )
    resync_seconds: float = Field(
        60.0,
        ge=0,
        description="Period of the safety-net reconcile of unfinished QuantizationJobs idle for half of it (0 disables; Job and pod events drive the status).",
    )
    workers: int = Field(
        16,
        ge=1,
        le=256,
        description="Threads running handlers, and twice as many refreshing statuses, results first (they wait on the API server, not the CPU).",
    )
    liveness_port: int = Field(8080, ge=0, le=65535, description="Port of /healthz (0 disables).")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Port of Prometheus /metrics (0 disables).")
    log_format: str = Field("json", pattern="^(json|plain|full)$", description="json, plain or full.")
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource requested by GPU jobs.")
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}, description="Node labels GPU jobs select."
    )
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        description="Tolerations GPU jobs get.",
    )
    worker_service_account: str | None = Field(
        None, description="Default service account of quantizer pods (spec.storage.serviceAccountName wins)."
    )
    run_as_user: int = Field(65532, ge=1, description="UID quantizer containers run as.")
    kueue: bool = Field(
        False,
        description="Watch Kueue Workloads (kueue.x-k8s.io/v1beta2) so that a job with spec.queueName shows why Kueue keeps it queued; needs Kueue's CRDs installed and read access to workloads.",
    )
    # The admin's policy (controller/policy.py; the chart renders the same lists into a ValidatingAdmissionPolicy).
    allowed_s3_endpoints: list[str] = Field(
        default_factory=list,
        description="spec.storage.endpoint values allowed besides AWS's own (scheme://host[:port], compared without path); empty: AWS only.",
    )
    allowed_image_repositories: list[str] = Field(
        default_factory=list,
        description="Repositories spec.execution.image may name besides those of the operator's quantizer images; an entry ending in '/' allows everything below it.",
    )
    allowed_service_accounts: list[str] = Field(
        default_factory=list,
        description="ServiceAccounts spec.storage.serviceAccountName may name (the default worker service account is always allowed).",
    )
    token_service_accounts: list[str] = Field(
        default_factory=list,
        description="ServiceAccounts whose quantizer pods get a Kubernetes API token mounted; none by default (IRSA and GKE workload identity need none).",
    )
    allowed_credentials_secrets: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Names (shell patterns) of Secrets spec.storage.credentialsSecret may name.",
    )
    default_active_deadline_seconds: int = Field(
        6 * 3600, ge=0, description="activeDeadlineSeconds of quantizer Jobs whose spec gives none (0: no deadline)."
    )
    s3_connect_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="Quantizer pods: seconds to connect to S3."
    )
    s3_read_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="Quantizer pods: seconds S3 may stay silent during a request."
    )
    s3_max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Quantizer pods: attempts per S3 request; a hung endpoint ends the run as StorageUnavailable after about attempts x (connect + read) seconds.",
    )
    scratch_size: str = Field(
        "20Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[eE][0-9]+|k)?$",
        description="Scratch emptyDir sizeLimit and ephemeral-storage request when spec.resources.scratchSize is not set.",
    )

    @field_validator("images")
    @classmethod
    def _known_families(cls, images: dict[str, str]) -> dict[str, str]:
        unknown = set(images) - {f.value for f in api.MethodFamily}
        if unknown:
            raise ValueError(
                f"unknown method families {sorted(unknown)}: use {', '.join(f.value for f in api.MethodFamily)}"
            )
        return {**DEFAULT_IMAGES, **images}

    def image_for(self, method: api.Method) -> str:
        return self.images[method.family.value]


_JSON_FIELDS = {"images", "default_requests", "default_limits", "gpu_node_selector", "gpu_tolerations"}
#: Lists given as comma-separated names.
_LIST_FIELDS = {
    "namespaces",
    "allowed_s3_endpoints",
    "allowed_image_repositories",
    "allowed_service_accounts",
    "token_service_accounts",
    "allowed_credentials_secrets",
}


def settings_from_env(environ: dict[str, str] | None = None, **overrides: Any) -> OperatorSettings:
    """Read EDGEQUANT_OPERATOR_<FIELD> variables (JSON for maps/lists, comma lists for namespaces)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in OperatorSettings.model_fields:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        if name in _JSON_FIELDS:
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} is not valid JSON: {exc}") from exc
        elif name in _LIST_FIELDS:
            values[name] = [n.strip() for n in raw.split(",") if n.strip()]
        else:
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return OperatorSettings.model_validate(values)
    except ValidationError as exc:
        problems = [f"{ENV_PREFIX}{str(e['loc'][0]).upper() if e['loc'] else ''}: {e['msg']}" for e in exc.errors()]
        raise ValueError("; ".join(problems)) from None
