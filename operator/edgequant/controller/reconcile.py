"""Reconciliation: make the batch Job of the current generation exist, then derive status from it.

Idempotent by construction: the Job name is a function of (name, generation),
creation adopts an existing Job of that name (owned by this object), Jobs of
other generations are deleted, a generation the status already reports
finished is never started again, and the status is recomputed from what the
API server shows, under a per-object lock, from a fresh read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime, timezone
from typing import Any

import kopf
from pydantic import ValidationError

from edgequant.api import validation
from edgequant.api import v1alpha1 as api
from edgequant.controller import kube, metrics, naming, plan, render, status
from edgequant.controller.settings import OperatorSettings

_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
#: Held from counting running Jobs to creating one, so the cap is never overshot by parallel handlers.
_CAPACITY_LOCK = threading.Lock()
_FORBIDDEN_RETRY_SECONDS = 30.0


class WaitingForCapacity(kopf.TemporaryError):
    """Not an error: the cap on running Jobs is reached; kopf retries the handler later."""


def _lock(namespace: str, name: str) -> threading.Lock:
    """Handlers of one QuantizationJob (its own, its Job's, its pods') run in parallel threads: serialise them."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault((namespace, name), threading.Lock())


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid_message(spec: Any) -> str:
    _, problems = validation.validate_document({"apiVersion": api.API_VERSION, "kind": api.KIND, "spec": spec})
    return "; ".join(str(p) for p in problems[:5]) or "the spec is not a valid QuantizationJob"


def _owner(body: dict[str, Any]) -> render.Owner:
    meta = body["metadata"]
    return render.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], generation=int(meta.get("generation") or 1))


def reconcile(body: dict[str, Any], *, settings: OperatorSettings, logger: logging.Logger) -> None:
    """The QuantizationJob was created, changed, or the operator (re)started: converge its batch Job and status."""
    owner = _owner(body)
    try:
        spec = api.QuantizationJobSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        message = _invalid_message(body.get("spec"))
        logger.warning("invalid spec: %s", message)
        _write(owner, status.invalid_spec(message), logger=logger)
        return

    jobs = plan.plan_jobs(
        kube.jobs_of(owner.namespace, owner.name),
        name=owner.name,
        uid=owner.uid,
        generation=owner.generation,
        previous_status=body.get("status") or {},
    )
    for obsolete in jobs.obsolete:
        logger.info("deleting Job %s (another generation, or a deleted namesake's)", obsolete)
        kube.delete_job(owner.namespace, obsolete)

    current = jobs.current
    if current is None:
        if not jobs.must_create:
            return  # finished earlier; its Job may have been TTL-deleted since
        current = _start(owner, spec, settings=settings, logger=logger)
        if current is None:
            return
    elif bool((current.get("spec") or {}).get("suspend")) != spec.suspend and not plan.is_finished(current):
        kube.set_job_suspended(owner.namespace, current["metadata"]["name"], spec.suspend)
    _refresh(owner, logger=logger)


def _start(owner: render.Owner, spec: api.QuantizationJobSpec, *, settings: OperatorSettings, logger: logging.Logger) -> dict[str, Any] | None:
    """Create (or adopt) the Job of this generation; None when it must not or cannot exist yet."""
    manifest = render.render_job(owner=owner, spec=spec, settings=settings)
    with _CAPACITY_LOCK if settings.max_concurrent_jobs else contextlib.nullcontext():
        if settings.max_concurrent_jobs and not spec.suspend:
            running = _running_jobs(settings)
            if running >= settings.max_concurrent_jobs:
                _write(owner, status.waiting_for_capacity(running, settings.max_concurrent_jobs), logger=logger)
                raise WaitingForCapacity(f"{running} Jobs running, cap {settings.max_concurrent_jobs}", delay=settings.capacity_retry_seconds)
        try:
            job, created = kube.create_job(manifest)
        except kube.JobRejected as exc:
            if exc.status == 403:
                _write(owner, status.job_forbidden(exc.message), logger=logger)
                raise kopf.TemporaryError(f"creating the Job is forbidden: {exc.message}", delay=_FORBIDDEN_RETRY_SECONDS) from exc
            logger.warning("the API server rejected the Job: %s", exc.message)
            _write(owner, status.job_rejected(exc.message), logger=logger)
            return None
    if plan.controller_uid(job) != owner.uid:
        raise kopf.TemporaryError(f"Job {job['metadata']['name']} still belongs to a deleted namesake; waiting for it to go", delay=2)
    if created:
        metrics.JOBS_CREATED.inc()
        logger.info("created Job %s", job["metadata"]["name"])
    return job


def _running_jobs(settings: OperatorSettings) -> int:
    selector = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"
    scopes: list[str | None] = list(settings.namespaces) or [None]
    return sum(1 for ns in scopes for job in kube.list_jobs(ns, selector) if plan.is_running(job))


def sync_owner(job_or_pod_meta: dict[str, Any], *, logger: logging.Logger) -> None:
    """A Job or pod of ours changed: refresh its QuantizationJob's status (other generations are ignored)."""
    labels = job_or_pod_meta.get("labels") or {}
    namespace, qj_name = job_or_pod_meta.get("namespace"), labels.get(naming.LABEL_JOB)
    generation = labels.get(naming.LABEL_GENERATION)
    if not namespace or not qj_name or not generation or not generation.isdigit():
        return
    _refresh_named(namespace, qj_name, generation=int(generation), logger=logger)


def resync(body: dict[str, Any], *, logger: logging.Logger) -> None:
    """Refresh the status from the Job of the current generation, if it exists (it is never created here)."""
    _refresh(_owner(body), logger=logger)


def _refresh(owner: render.Owner, *, logger: logging.Logger) -> None:
    _refresh_named(owner.namespace, owner.name, generation=owner.generation, uid=owner.uid, logger=logger)


def _refresh_named(namespace: str, name: str, *, generation: int, logger: logging.Logger, uid: str | None = None) -> None:
    """Read the object, its Job and the Job's pods fresh, under the object's lock, and write the status."""
    with _lock(namespace, name):
        body = kube.get_quantization_job(namespace, name)
        if body is None or (uid is not None and body["metadata"].get("uid") != uid):
            return
        owner = _owner(body)
        if owner.generation != generation:
            return  # a newer generation is being reconciled: this news is stale
        job = kube.read_job(namespace, naming.job_name(name, generation))
        if job is None or plan.controller_uid(job) != owner.uid:
            return
        _apply(body, status.observe_job(job, kube.pods_of_job(job)), logger=logger)


def _write(owner: render.Owner, observation: status.Observation, *, logger: logging.Logger) -> None:
    """Write an observation made without the Job (invalid spec, waiting for capacity...)."""
    with _lock(owner.namespace, owner.name):
        body = kube.get_quantization_job(owner.namespace, owner.name)
        if body is None or body["metadata"].get("uid") != owner.uid or _owner(body).generation != owner.generation:
            return
        _apply(body, observation, logger=logger)


def _apply(body: dict[str, Any], observation: status.Observation, *, logger: logging.Logger) -> None:
    """The one place a status is written: one merge patch, only if something changed, plus its Events."""
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    previous = body.get("status") or {}
    if not status.settle(previous, observation, generation=generation):
        return
    desired = status.desired_status(previous, observation, generation=generation, now=_now())
    _record_phase(meta["uid"], desired["phase"])
    change = status.diff(previous, desired)
    if not change.changed:
        return
    kube.patch_status(meta["namespace"], meta["name"], change.patch)
    for event in change.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if change.events:
        logger.info("phase %s (%s): %s", desired["phase"], desired["reason"], desired["message"])
    _record_duration(body.get("spec") or {}, previous, desired)


# --------------------------------------------------------------------------- metrics bookkeeping

_PHASES: dict[str, str] = {}
_PHASES_LOCK = threading.Lock()


def _record_phase(uid: str, phase: str) -> None:
    with _PHASES_LOCK:
        old = _PHASES.get(uid)
        if old == phase:
            return
        if old is not None:
            metrics.JOBS_BY_PHASE.labels(old).dec()
        metrics.JOBS_BY_PHASE.labels(phase).inc()
        _PHASES[uid] = phase


def _record_duration(spec: dict[str, Any], previous: dict[str, Any], desired: dict[str, Any]) -> None:
    terminal = plan.TERMINAL_PHASES
    if desired["phase"] not in terminal or (previous.get("phase") in terminal and previous.get("observedGeneration") == desired["observedGeneration"]):
        return
    if desired.get("startTime") and desired.get("completionTime"):
        start = datetime.fromisoformat(str(desired["startTime"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(desired["completionTime"]).replace("Z", "+00:00"))
        metrics.RUN_DURATION.labels(str(spec.get("method", "")), desired["phase"]).observe(max(0.0, (end - start).total_seconds()))


def forget(namespace: str, name: str, uid: str) -> None:
    """The QuantizationJob is gone: drop its bookkeeping (its Job and pods go by garbage collection)."""
    with _PHASES_LOCK:
        old = _PHASES.pop(uid, None)
        if old is not None:
            metrics.JOBS_BY_PHASE.labels(old).dec()
    with _LOCKS_GUARD:
        _LOCKS.pop((namespace, name), None)
