"""Builders of the API objects the controller reads (batch Jobs and pods shaped as the API server sends them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult
from edgequant.api.v1alpha1 import ArtifactInfo, ModelMeasurement, Results
from edgequant.controller import cache
from edgequant.controller.kube import KubeClient
from edgequant.controller.reconcile import Reconciler
from edgequant.controller.settings import OperatorSettings


class Clock:
    """Monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def scheduled() -> list[tuple[float, Callable[[], None]]]:
    return []


@pytest.fixture
def reconciler(clock: Clock, scheduled: list[tuple[float, Callable[[], None]]]) -> Reconciler:
    """A Reconciler whose API client points nowhere: these tests exercise decisions made from the cache alone."""
    unreachable = client.Configuration()
    unreachable.host = "http://127.0.0.1:9"
    return Reconciler(
        kube=KubeClient(client.ApiClient(unreachable)),
        settings=OperatorSettings(),
        post_event=lambda *a, **k: None,
        schedule=lambda delay, fn: scheduled.append((delay, fn)),
        clock=clock,
    )


def quantization_job(
    name: str = "mnist", *, uid: str = "qj-uid", generation: int = 1, resource_version: str = "1", **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationJob",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": uid,
            "generation": generation,
            "resourceVersion": resource_version,
        },
        "spec": {"method": "tflite-dynamic-range"},
        "status": status,
    }


def cache_of(
    qjs: list[dict[str, Any]] = (), jobs: list[dict[str, Any]] = (), pods: dict[str, list[dict[str, Any]]] | None = None
) -> cache.Cache:  # type: ignore[assignment]
    """A cache as the operator's watches would fill it: Jobs keyed by their QuantizationJob, pods by their Job's uid."""
    qj_index = {(q["metadata"]["namespace"], q["metadata"]["name"]): [cache.quantization_job_entry(q)[1]] for q in qjs}
    job_index: dict[Any, list[dict[str, Any]]] = {}
    for job in jobs:
        owner = job["metadata"]["ownerReferences"][0]["name"]
        job_index.setdefault((job["metadata"]["namespace"], owner), []).append(job)
    pod_index = {("team-a", uid): list(ps) for uid, ps in (pods or {}).items()}
    return cache.Cache(quantization_jobs=qj_index, jobs=job_index, pods=pod_index)


def batch_job(
    name: str = "mnist-g1",
    *,
    uid: str = "job-uid",
    owner_uid: str = "qj-uid",
    suspend: bool = False,
    backoff_limit: int = 2,
    **status: Any,
) -> dict[str, Any]:
    conditions = status.pop("conditions", [])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": uid,
            "ownerReferences": [
                {
                    "apiVersion": "edgequant.io/v1alpha1",
                    "kind": "QuantizationJob",
                    "name": name.rsplit("-g", 1)[0],
                    "uid": owner_uid,
                    "controller": True,
                }
            ],
        },
        "spec": {"suspend": suspend, "backoffLimit": backoff_limit},
        "status": {
            **status,
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": "2026-01-01T00:10:00Z"}
                for t, r, m in conditions
            ],
        },
    }


def pod(
    name: str,
    phase: str,
    *,
    created: str = "2026-01-01T00:00:00Z",
    exit_code: int | None = None,
    message: str | None = None,
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
