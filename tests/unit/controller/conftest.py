"""Builders of the API objects the controller reads (batch Jobs and pods shaped as the API server sends them)."""

from __future__ import annotations

from typing import Any

from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult
from edgequant.api.v1alpha1 import ArtifactInfo, ModelMeasurement, Results


def batch_job(name: str = "mnist-g1", *, uid: str = "job-uid", owner_uid: str = "qj-uid", suspend: bool = False, backoff_limit: int = 2, **status: Any) -> dict[str, Any]:
    conditions = status.pop("conditions", [])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": uid,
            "ownerReferences": [{"apiVersion": "edgequant.io/v1alpha1", "kind": "QuantizationJob", "name": name.rsplit("-g", 1)[0], "uid": owner_uid, "controller": True}],
        },
        "spec": {"suspend": suspend, "backoffLimit": backoff_limit},
        "status": {**status, "conditions": [{"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": "2026-01-01T00:10:00Z"} for t, r, m in conditions]},
    }


def pod(
    name: str, phase: str, *, created: str = "2026-01-01T00:00:00Z", exit_code: int | None = None, message: str | None = None,
    finished: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        terminated: dict[str, Any] = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}
        if finished is not None:
            terminated["finishedAt"] = finished
        if message is not None:
            terminated["message"] = message
        status["containerStatuses"] = [{"name": "quantizer", "state": {"terminated": terminated}}]
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}


def success_message(*, degraded: bool = False) -> str:
    results = Results(
        artifact=ArtifactInfo(uri="s3://b/out/m.dr.tflite", sha256="ab" * 32, size_bytes=1234),
        baseline=ModelMeasurement(accuracy=0.91, size_bytes=5000),
        quantized=ModelMeasurement(accuracy=0.90, size_bytes=1234),
        compression_ratio=4.05,
        accuracy_drop=0.01,
        sensitive_layers=["conv1", "dense_1"],
        degraded=degraded,
        report_uri="s3://b/out/report.json",
    )
    return WorkerResult.for_exit(ExitCode.SUCCESS, "published", results).to_termination_message()


def failure_message(code: ExitCode, message: str) -> str:
    return WorkerResult.for_exit(code, message).to_termination_message()
