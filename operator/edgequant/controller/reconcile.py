"""Reconciliation: make the batch Job of the current generation exist, then derive status from it.

Idempotent by construction: the Job name is a function of (name, generation),
creation adopts an existing Job of that name (owned by this object), Jobs of
other generations are deleted, a generation the status already reports
finished is never started again, and the status is recomputed from what the
cluster shows: the object read fresh, its Job and pods from the operator's
watches (cache.py), under a per-object lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import kopf
from pydantic import ValidationError

from edgequant.api import validation
from edgequant.api import v1alpha1 as api
from edgequant.controller import kube, metrics, naming, plan, policy, render, status
from edgequant.controller.cache import Cache, Key, quantization_job_entry
from edgequant.controller.settings import OperatorSettings

_FORBIDDEN_RETRY_SECONDS = 30.0


class WaitingForCapacity(kopf.TemporaryError):
    """Not an error: the cap on running Jobs is reached; kopf retries the handler later."""


# --------------------------------------------------------------------------- per-object serialisation

_LOCKS: dict[Key, threading.Lock] = {}
#: Per object: refreshes requested, and the request count when the latest refresh started reading.
_REQUESTED: dict[Key, int] = {}
_STARTED: dict[Key, int] = {}
_GUARD = threading.Lock()


def _lock(key: Key) -> threading.Lock:
    """Handlers of one QuantizationJob (its own, its Job's, its pods') run in parallel threads: serialise them."""
    with _GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid_message(spec: Any) -> str:
    _, problems = validation.validate_document({"apiVersion": api.API_VERSION, "kind": api.KIND, "spec": spec})
    return "; ".join(str(p) for p in problems[:5]) or "the spec is not a valid QuantizationJob"


def _owner(body: dict[str, Any]) -> render.Owner:
    meta = body["metadata"]
    return render.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], generation=int(meta.get("generation") or 1))


# --------------------------------------------------------------------------- the QuantizationJob changed


def reconcile(body: dict[str, Any], *, cache: Cache, settings: OperatorSettings, logger: logging.Logger) -> None:
    """The QuantizationJob was created, changed, or the operator (re)started: converge its batch Job and status."""
    owner = _owner(body)
    try:
        spec = api.QuantizationJobSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        message = _invalid_message(body.get("spec"))
        logger.warning("invalid spec: %s", message)
        _write(owner, status.invalid_spec(message), cache=cache, logger=logger)
        return

    jobs = _plan(owner, cache=cache, previous_status=body.get("status") or {}, logger=logger)
    if jobs.stale:
        raise kopf.TemporaryError(f"{owner.namespace}/{owner.name}: a newer generation than this one has a Job", delay=1)
    if jobs.must_create and (refused := policy.violations(spec, settings)):
        # Check policy before creating the Job: a refused spec gets a status naming the policy and the fix, no Job.
        logger.warning("refused by policy: %s", policy.describe(refused))
        _write(owner, status.policy_refused(policy.describe(refused)), cache=cache, logger=logger)
    elif jobs.must_create:
        _start(owner, spec, cache=cache, settings=settings, logger=logger)
    elif jobs.current is not None and bool(jobs.current["spec"].get("suspend")) != spec.suspend and not plan.is_finished(jobs.current):
        kube.set_job_suspended(owner.namespace, jobs.current["metadata"]["name"], spec.suspend)
    _refresh(owner.namespace, owner.name, uid=owner.uid, cache=cache, logger=logger)


def _plan(owner: render.Owner, *, cache: Cache, previous_status: dict[str, Any], logger: logging.Logger) -> plan.JobPlan:
    """Sort this object's Jobs and delete the obsolete ones."""
    jobs = plan.plan_jobs(
        cache.jobs_of(owner.namespace, owner.name),
        name=owner.name,
        uid=owner.uid,
        generation=owner.generation,
        previous_status=previous_status,
    )
    if jobs.stale:
        return jobs  # read before the latest spec change: decide nothing from it
    for obsolete in jobs.obsolete:
        logger.info("deleting Job %s (an older generation, or a deleted namesake's)", obsolete)
        kube.delete_job(owner.namespace, obsolete)
    return jobs


def _start(owner: render.Owner, spec: api.QuantizationJobSpec, *, cache: Cache, settings: OperatorSettings, logger: logging.Logger) -> None:
    """Create (or adopt) the Job of this generation, unless the cap says wait or the API server says no."""
    manifest = render.render_job(owner=owner, spec=spec, settings=settings)
    capped = bool(settings.max_concurrent_jobs) and not spec.suspend
    with _CAPACITY_LOCK if capped else contextlib.nullcontext():
        if capped:
            running = _running_jobs(cache)
            if running >= settings.max_concurrent_jobs:
                _write(owner, status.waiting_for_capacity(running, settings.max_concurrent_jobs), cache=cache, logger=logger)
                raise WaitingForCapacity(f"{running} Jobs running, cap {settings.max_concurrent_jobs}", delay=settings.capacity_retry_seconds)
        try:
            job, created = kube.create_job(manifest)
        except kube.JobRejected as exc:
            if exc.status == 403:
                _write(owner, status.job_forbidden(exc.message), cache=cache, logger=logger)
                raise kopf.TemporaryError(f"creating the Job is forbidden: {exc.message}", delay=_FORBIDDEN_RETRY_SECONDS) from exc
            logger.warning("the API server rejected the Job: %s", exc.message)
            _write(owner, status.job_rejected(exc.message), cache=cache, logger=logger)
            return
        if capped:
            with _GUARD:
                _JUST_CREATED[(owner.namespace, job["metadata"]["name"])] = time.monotonic()
    if plan.controller_uid(job) != owner.uid:
        raise kopf.TemporaryError(f"Job {job['metadata']['name']} still belongs to a deleted namesake; waiting for it to go", delay=2)
    if created:
        metrics.JOBS_CREATED.inc()
        logger.info("created Job %s", job["metadata"]["name"])  # its first watch event writes the status


#: Held from counting running Jobs to creating one, so that parallel handlers never overshoot the cap.
_CAPACITY_LOCK = threading.Lock()
#: Jobs this operator created that its watch may not show yet: they count against the cap meanwhile.
_JUST_CREATED: dict[Key, float] = {}
_JUST_CREATED_TTL = 60.0


def _running_jobs(cache: Cache) -> int:
    states = cache.job_states()
    now = time.monotonic()
    with _GUARD:
        for key, since in list(_JUST_CREATED.items()):
            if key in states or now - since > _JUST_CREATED_TTL:
                del _JUST_CREATED[key]  # the watch shows it now (running or already done)
        unseen = len(_JUST_CREATED)
    return sum(states.values()) + unseen


# --------------------------------------------------------------------------- a Job or pod changed


#: Fingerprint of each Job/pod of ours as of the last status refresh it caused.
_SEEN: dict[str, tuple[Any, ...]] = {}


@dataclass(frozen=True)
class RefreshRequest:
    """A Job or pod event that may change its QuantizationJob's status, with its place in the refresh queue."""

    key: Key
    ticket: int
    source_uid: str
    seen: tuple[Any, ...] | None


def refresh_request(obj: dict[str, Any], *, kind: str, deleted: bool) -> RefreshRequest | None:
    """None when the event changes nothing the status shows (readiness, finalizers, a deleted pod)."""
    meta = obj.get("metadata") or {}
    uid = str(meta.get("uid"))
    namespace, qj_name = meta.get("namespace"), naming.quantization_job_of(meta)
    seen = None
    if deleted:
        with _GUARD:
            _SEEN.pop(uid, None)
        if kind == "Pod":
            return None
    else:
        seen = status.job_fingerprint(obj) if kind == "Job" else status.pod_fingerprint(obj)
        with _GUARD:
            if _SEEN.get(uid) == seen:
                return None
    if not namespace or not qj_name:
        return None
    return RefreshRequest(key=(str(namespace), str(qj_name)), ticket=_ticket((str(namespace), str(qj_name))), source_uid=uid, seen=seen)


def refresh(request: RefreshRequest, *, cache: Cache, logger: logging.Logger) -> None:
    """Serve a refresh request (unless a refresh that started after it already did)."""
    _refresh(*request.key, cache=cache, logger=logger, ticket=request.ticket)
    if request.seen is not None:
        with _GUARD:
            _SEEN[request.source_uid] = request.seen


def _ticket(key: Key) -> int:
    with _GUARD:
        ticket = _REQUESTED[key] = _REQUESTED.get(key, 0) + 1
        return ticket


def _refresh(namespace: str, name: str, *, cache: Cache, logger: logging.Logger, uid: str | None = None, ticket: int | None = None) -> None:
    """Take the object, its current Job and that Job's pods from the cache, and write the status.

    Requests coalesce: one made (``ticket`` taken) before a refresh started reading is covered by it and returns.
    """
    key = (namespace, name)
    ticket = ticket if ticket is not None else _ticket(key)
    with _lock(key):
        with _GUARD:
            if _STARTED.get(key, 0) >= ticket:
                return
            _STARTED[key] = _REQUESTED[key]
        body = _newest(cache.quantization_job(namespace, name)) or kube.get_quantization_job(namespace, name)
        for _ in range(2):
            if body is None or (uid is not None and body["metadata"].get("uid") != uid):
                return
            owner = _owner(body)
            jobs = _plan(owner, cache=cache, previous_status=body.get("status") or {}, logger=logger)
            if jobs.stale:
                body = kube.get_quantization_job(namespace, name)  # the cached view predates a spec change
                continue
            if jobs.current is None:
                return
            observation = status.observe_job(jobs.current, cache.pods_of(jobs.current))
            if observation is None:
                return
            try:
                _apply(body, observation, logger=logger)
                return
            except kube.Conflict:
                body = kube.get_quantization_job(namespace, name)  # the cached view was behind: read it fresh
        raise kopf.TemporaryError(f"the status of {namespace}/{name} keeps changing under us", delay=1)


#: Per object uid: (resourceVersion a status patch was based on, the object that patch returned).
_WRITTEN: dict[str, tuple[str, dict[str, Any]]] = {}


def _newest(cached: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cached object, or what our own last patch returned while the watch has not caught up with it."""
    if cached is None:
        return None
    with _GUARD:
        written = _WRITTEN.get(str(cached["metadata"].get("uid")))
    if written is not None and written[0] == cached["metadata"].get("resourceVersion"):
        return written[1]
    return cached


def _write(owner: render.Owner, observation: status.Observation, *, cache: Cache, logger: logging.Logger) -> None:
    """Write an observation made without a Job (invalid spec, waiting for capacity, Job refused)."""
    with _lock((owner.namespace, owner.name)):
        body = _newest(cache.quantization_job(owner.namespace, owner.name))
        if body is None or _owner(body).generation < owner.generation:
            body = kube.get_quantization_job(owner.namespace, owner.name)
        for _ in range(2):
            if body is None or body["metadata"].get("uid") != owner.uid or _owner(body).generation != owner.generation:
                return
            try:
                _apply(body, observation, logger=logger)
                return
            except kube.Conflict:
                body = kube.get_quantization_job(owner.namespace, owner.name)
        raise kopf.TemporaryError(f"the status of {owner.namespace}/{owner.name} keeps changing under us", delay=1)


def _apply(body: dict[str, Any], observation: status.Observation, *, logger: logging.Logger) -> None:
    """The one place a status is written: one merge patch, only if something changed, plus its Events.

    The patch is conditional on the resourceVersion ``body`` was read at (kube.Conflict otherwise), so a status
    computed from a view that is behind is never written.
    """
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
    patched = kube.patch_status(meta["namespace"], meta["name"], change.patch, resource_version=meta.get("resourceVersion"))
    if patched is not None:
        with _GUARD:
            _WRITTEN[meta["uid"]] = (str(meta.get("resourceVersion")), quantization_job_entry(patched)[1])
    for event in change.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if change.events:
        logger.info("phase %s (%s): %s", desired["phase"], desired["reason"], desired["message"])
    _record_duration(body.get("spec") or {}, previous, desired)


# --------------------------------------------------------------------------- metrics bookkeeping

_PHASES: dict[str, str] = {}


def _record_phase(uid: str, phase: str) -> None:
    with _GUARD:
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
    key = (namespace, name)
    with _GUARD:
        old = _PHASES.pop(uid, None)
        if old is not None:
            metrics.JOBS_BY_PHASE.labels(old).dec()
        _LOCKS.pop(key, None)
        _REQUESTED.pop(key, None)
        _STARTED.pop(key, None)
        _WRITTEN.pop(uid, None)
