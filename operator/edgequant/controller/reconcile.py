"""Reconciliation: make the batch Job of the current generation exist, then derive status from it.

Idempotent by construction: the Job name is a function of (name, generation),
creation adopts an existing Job of that name, Jobs of other generations are
deleted, and the status is recomputed from what the API server shows.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any

import kopf
from pydantic import ValidationError

from edgequant.api import validation
from edgequant.api import v1alpha1 as api
from edgequant.api.conditions import Phase
from edgequant.controller import kube, metrics, naming, render, status
from edgequant.controller.settings import OperatorSettings

_PHASES: dict[str, str] = {}
_PHASES_LOCK = threading.Lock()
_WRITE_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(namespace: str, name: str) -> threading.Lock:
    """Handlers of one QuantizationJob (its own, its Job's, its pods') run in parallel threads: serialise their writes."""
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault((namespace, name), threading.Lock())


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_finished(job: dict[str, Any]) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return True
    return False


def _active_jobs(settings: OperatorSettings) -> int:
    selector = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"
    scopes: list[str | None] = list(settings.namespaces) or [None]
    return sum(1 for ns in scopes for job in kube.list_jobs(ns, selector) if not _is_finished(job))


def _invalid_message(spec: Any) -> str:
    _, problems = validation.validate_document({"apiVersion": api.API_VERSION, "kind": api.KIND, "spec": spec})
    return "; ".join(str(p) for p in problems[:5]) or "the spec is not a valid QuantizationJob"


def reconcile(body: dict[str, Any], *, settings: OperatorSettings, logger: logging.Logger) -> None:
    meta = body["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], int(meta.get("generation") or 1)
    try:
        spec = api.QuantizationJobSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        message = _invalid_message(body.get("spec"))
        logger.warning("invalid spec: %s", message)
        _write(body, status.invalid_spec(message), logger=logger)
        return

    owner = render.Owner(name=name, namespace=namespace, uid=meta["uid"], generation=generation)
    wanted = naming.job_name(name, generation)
    current: dict[str, Any] | None = None
    for job in kube.jobs_of(namespace, name):
        if job["metadata"]["name"] == wanted:
            current = job
        else:
            logger.info("spec changed: deleting Job %s of an older generation", job["metadata"]["name"])
            kube.delete_job(namespace, job["metadata"]["name"])

    if current is None:
        if settings.max_concurrent_jobs:
            running = _active_jobs(settings)
            if running >= settings.max_concurrent_jobs:
                _write(body, status.waiting_for_capacity(running, settings.max_concurrent_jobs), logger=logger)
                raise kopf.TemporaryError("waiting for capacity", delay=settings.capacity_retry_seconds)
        manifest = render.render_job(owner=owner, spec=spec, settings=settings)
        current, created = kube.create_job(manifest)
        if created:
            metrics.JOBS_CREATED.inc()
            logger.info("created Job %s", wanted)
    elif bool((current.get("spec") or {}).get("suspend")) != spec.suspend and not _is_finished(current):
        kube.set_job_suspended(namespace, wanted, spec.suspend)
        current.setdefault("spec", {})["suspend"] = spec.suspend

    _sync(body, current, logger=logger)


def sync_owner(job_or_pod_meta: dict[str, Any], *, settings: OperatorSettings, logger: logging.Logger) -> None:
    """A Job or pod of ours changed: refresh its QuantizationJob's status (stale generations are ignored)."""
    del settings
    labels = job_or_pod_meta.get("labels") or {}
    namespace = job_or_pod_meta.get("namespace")
    qj_name = labels.get(naming.LABEL_JOB)
    if not namespace or not qj_name:
        return
    body = kube.get_quantization_job(namespace, qj_name)
    if body is None:
        return
    generation = int(body["metadata"].get("generation") or 1)
    if labels.get(naming.LABEL_GENERATION) != str(generation):
        return
    wanted = naming.job_name(qj_name, generation)
    job = next((j for j in kube.jobs_of(namespace, qj_name) if j["metadata"]["name"] == wanted), None)
    if job is not None:
        _sync(body, job, logger=logger)


def _sync(body: dict[str, Any], job: dict[str, Any], *, logger: logging.Logger) -> None:
    pods = kube.pods_of_job(job["metadata"]["namespace"], job["metadata"]["name"])
    _write(body, status.observe_job(job, pods), logger=logger)


def _write(body: dict[str, Any], observation: status.Observation, *, logger: logging.Logger) -> None:
    meta = body["metadata"]
    with _write_lock(meta["namespace"], meta["name"]):
        fresh = kube.get_quantization_job(meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("uid") != meta.get("uid"):
            return  # deleted (or replaced) meanwhile
        if int(fresh["metadata"].get("generation") or 1) != int(meta.get("generation") or 1):
            return  # a newer generation is being reconciled; this observation is stale
        _write_locked(fresh, observation, logger=logger)


def _write_locked(body: dict[str, Any], observation: status.Observation, *, logger: logging.Logger) -> None:
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    previous = body.get("status") or {}
    desired = status.desired_status(previous, observation, generation=generation, now=_now())
    change = status.diff(previous, desired)
    if not change.changed:
        return
    kube.patch_status(meta["namespace"], meta["name"], change.patch)
    body["status"] = {**previous, **change.patch}
    for event in change.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if change.events:
        logger.info("phase %s (%s): %s", desired["phase"], desired["reason"], desired["message"])
    _record_metrics(meta.get("uid", ""), body.get("spec") or {}, previous, desired)


def _record_metrics(uid: str, spec: dict[str, Any], previous: dict[str, Any], desired: dict[str, Any]) -> None:
    phase = desired["phase"]
    with _PHASES_LOCK:
        _PHASES[uid] = phase
        for known in Phase:
            metrics.JOBS_BY_PHASE.labels(known.value).set(sum(1 for p in _PHASES.values() if p == known.value))
    terminal = (Phase.SUCCEEDED.value, Phase.FAILED.value)
    if phase in terminal and previous.get("phase") not in terminal and desired.get("startTime") and desired.get("completionTime"):
        start = datetime.fromisoformat(str(desired["startTime"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(desired["completionTime"]).replace("Z", "+00:00"))
        metrics.RUN_DURATION.labels(str(spec.get("method", "")), phase).observe(max(0.0, (end - start).total_seconds()))


def forget(namespace: str, name: str, uid: str) -> None:
    with _PHASES_LOCK:
        _PHASES.pop(uid, None)
    with _WRITE_LOCKS_GUARD:
        _WRITE_LOCKS.pop((namespace, name), None)
