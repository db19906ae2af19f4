"""Reconciliation: make the batch Job of the current generation exist, then derive status from it.

Idempotent by construction: the Job name is a function of (name, generation),
creation adopts an existing Job of that name (owned by this object), Jobs of
other generations are deleted (in the foreground: the new generation's Job is
created only after their pods are gone), a generation the status already reports
finished is never started again, and the status is recomputed from what the
cluster shows: the object read fresh, its Job and pods from the operator's
watches (cache.py), under a per-object lock.

Writes on the happy path of one job: create the Job, the Running status, the
terminal status. A Pending status is written only for a Job whose pod is not running
``PENDING_STATUS_DELAY`` seconds after its creation and is not on its way (scheduled, no container
error), or has not run after ``PENDING_STATUS_STUCK_AFTER``; ``ttlSecondsAfterFinished``
is set on the Job only once the terminal status (with the results) is written.

All mutable state lives in one ``Reconciler`` per operator process (kopf's memo holds it), with its
API client, settings, Event sink and scheduler handed in.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from edgequant.api import v1alpha1 as api
from edgequant.api import validation
from edgequant.api.conditions import Phase, Reason
from edgequant.controller import metrics, naming, plan, policy, queueing, render, status
from edgequant.controller.cache import Cache, Key, quantization_job_entry
from edgequant.controller.kube import Conflict, JobRejected, KubeClient
from edgequant.controller.settings import OperatorSettings

_FORBIDDEN_RETRY_SECONDS = 30.0
#: A Job this operator just created shows Pending only if its pod is not running this much later and not on its
#: way (unscheduled, or a container error such as an image pull): most pods start sooner, and the status goes
#: straight to Running (one write less per job).
PENDING_STATUS_DELAY = 20.0
#: ... or if its pod, though scheduled, has not run after this long.
PENDING_STATUS_STUCK_AFTER = 300.0
#: Jobs this operator created that its watch may not show yet count against the cap for at most this long.
_JUST_CREATED_TTL = 60.0
#: Status patches remembered per object (each: the resourceVersion it was based on -> what it returned).
_WRITTEN_KEPT = 4


class WaitingForCapacity(kopf.TemporaryError):
    """Not an error: the cap on running Jobs is reached; kopf retries the handler later."""


#: Post a Kubernetes Event about an object: ``(body, *, type, reason, message)``, as ``kopf.event``.
EventSink = Callable[..., None]
#: Run a function once, this many seconds from now (off the caller's thread).
Scheduler = Callable[[float, Callable[[], None]], None]


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid_message(spec: Any) -> str:
    _, problems = validation.validate_document({"apiVersion": api.API_VERSION, "kind": api.KIND, "spec": spec})
    return "; ".join(str(p) for p in problems[:5]) or "the spec is not a valid QuantizationJob"


def _owner(body: dict[str, Any]) -> render.Owner:
    meta = body["metadata"]
    return render.Owner(
        name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], generation=int(meta.get("generation") or 1)
    )


def ttl_after_finished(body: dict[str, Any]) -> int | None:
    """The spec's ttlSecondsAfterFinished: set on the Job by the operator once the result is in the status."""
    value = ((body.get("spec") or {}).get("execution") or {}).get("ttlSecondsAfterFinished")
    return int(value) if value is not None else None


def pending_status_due(
    observation: status.Observation,
    previous: dict[str, Any],
    *,
    generation: int,
    created_ago: float | None,
    starting: bool = False,
) -> bool:
    """Whether an observation may be written now: a Pending (JobCreated) one waits while a Job we created
    ``created_ago`` seconds ago starts (longer while its pod is ``starting``: scheduled, no container error), unless
    the status already describes this generation (then it stays exact)."""
    if observation.phase is not Phase.PENDING or observation.reason != Reason.JOB_CREATED:
        return True
    if previous.get("observedGeneration") == generation and previous.get("phase"):
        return True
    if created_ago is None:
        return True
    return created_ago >= (PENDING_STATUS_STUCK_AFTER if starting else PENDING_STATUS_DELAY)


@dataclass(frozen=True)
class RefreshRequest:
    """A Job or pod event that may change its QuantizationJob's status, with its place in the refresh queue."""

    key: Key
    ticket: int
    source_uid: str
    seen: tuple[Any, ...] | None
    final: bool = False
    """The event shows a pod that ended or a Job that concluded: the refresh that may write the result."""


class Reconciler:
    """Converges QuantizationJobs: creates, adopts and deletes their Jobs and writes their status."""

    def __init__(
        self,
        *,
        kube: KubeClient,
        settings: OperatorSettings,
        post_event: EventSink = kopf.event,
        schedule: Scheduler | None = None,
        clock: Callable[[], float] = time.monotonic,
        utc_now: Callable[[], str] = _utc_now,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self._post_event = post_event
        self._schedule = schedule
        self._clock = clock
        self._utc_now = utc_now
        self._wall_clock = wall_clock
        self._guard = threading.Lock()
        #: Handlers of one QuantizationJob (its own, its Job's, its pods') run in parallel threads: one lock each.
        self._locks: dict[Key, threading.Lock] = {}
        #: Per object: refreshes requested, and the request count when the latest refresh started reading.
        self._requested: dict[Key, int] = {}
        self._started: dict[Key, int] = {}
        #: Fingerprint of each Job/pod of ours as of the last status refresh it caused.
        self._seen: dict[str, tuple[Any, ...]] = {}
        #: Per object uid, our latest status patches: resourceVersion each was based on -> the object it returned
        #: (in order, the last one newest), so that a watch lagging several of our writes behind costs no conflict.
        self._written: dict[str, dict[str, dict[str, Any]]] = {}
        #: Per object uid: the phase the JOBS_BY_PHASE gauge counts it in.
        self._phases: dict[str, str] = {}
        #: Held from counting running Jobs to creating one, so that parallel handlers never overshoot the cap.
        self._capacity_lock = threading.Lock()
        #: (namespace, Job name) -> when this operator created it: for the cap (until the watch shows it) and
        #: for the delayed Pending status.
        self._created_at: dict[Key, float] = {}
        #: Jobs created by this operator that its watch has not shown yet: they count against the cap meanwhile.
        self._unseen: set[Key] = set()
        #: Uids of Jobs given their ttlSecondsAfterFinished (each once).
        self._expiring: set[str] = set()

    # ----------------------------------------------------------------------- the QuantizationJob changed

    def reconcile(self, body: dict[str, Any], *, cache: Cache, logger: logging.Logger) -> None:
        """The QuantizationJob was created, changed, its Job went, or the operator (re)started: converge."""
        owner = _owner(body)
        try:
            spec = api.QuantizationJobSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            message = _invalid_message(body.get("spec"))
            logger.warning("invalid spec: %s", message)
            self._write(owner, status.invalid_spec(message), cache=cache, logger=logger)
            return

        jobs = self._plan(owner, cache=cache, previous_status=self._latest_status(body), logger=logger)
        if jobs.stale:
            raise kopf.TemporaryError(
                f"{owner.namespace}/{owner.name}: a newer generation than this one has a Job", delay=1
            )
        if jobs.must_create and (refused := policy.violations(spec, self.settings)):
            # Check policy before creating the Job: a refused spec gets a status naming the policy and the fix, no Job.
            logger.warning("refused by policy: %s", policy.describe(refused))
            self._write(owner, status.policy_refused(policy.describe(refused)), cache=cache, logger=logger)
        elif jobs.must_create:
            self._start(owner, spec, cache=cache, logger=logger)
        elif jobs.leaving or jobs.obsolete:
            logger.info(
                "waiting for Jobs %s to go before starting generation %d",
                ", ".join(jobs.leaving + jobs.obsolete),
                owner.generation,
            )
        elif (
            suspend := queueing.suspend_to_enforce(jobs.current, spec_suspend=spec.suspend)
        ) is not None and jobs.current is not None:
            self.kube.patch_job_spec(
                owner.namespace, jobs.current["metadata"]["name"], {"suspend": suspend}
            )  # never a Job Kueue manages
        self._refresh(owner.namespace, owner.name, uid=owner.uid, cache=cache, logger=logger)

    def job_gone(self, job: dict[str, Any], *, cache: Cache, logger: logging.Logger) -> None:
        """A Job of ours was deleted (by hand, by us for a new generation, by its TTL): converge on the spot.

        The object is read fresh, so a terminal status written just before a TTL deletion is seen and nothing reruns.
        """
        meta = job.get("metadata") or {}
        with self._guard:
            self._expiring.discard(str(meta.get("uid")))
        namespace, qj_name = meta.get("namespace"), naming.quantization_job_of(meta)
        if not namespace or not qj_name:
            return
        body = self.kube.get_quantization_job(str(namespace), str(qj_name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        self.reconcile(body, cache=cache, logger=logger)

    def _latest_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """The status as ``body`` shows it, or as our own last write left it when that is newer for this generation."""
        previous = dict(body.get("status") or {})
        with self._guard:
            chain = self._written.get(str(body["metadata"].get("uid")))
            written = list(chain.values())[-1] if chain else None
        if written is not None:
            ours = written.get("status") or {}
            generation = int(body["metadata"].get("generation") or 1)
            if plan.finished_for_generation(ours, generation) and not plan.finished_for_generation(
                previous, generation
            ):
                return dict(ours)
        return previous

    def _plan(
        self, owner: render.Owner, *, cache: Cache, previous_status: dict[str, Any], logger: logging.Logger
    ) -> plan.JobPlan:
        """Sort this object's Jobs and delete the obsolete ones (in the foreground: a Job goes after its pods)."""
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
            self.kube.delete_job(owner.namespace, obsolete, wait_for_pods=True)
        return jobs

    def _start(
        self, owner: render.Owner, spec: api.QuantizationJobSpec, *, cache: Cache, logger: logging.Logger
    ) -> None:
        """Create (or adopt) the Job of this generation, unless the cap says wait or the API server says no."""
        settings = self.settings
        self._prune_created()
        manifest = render.render_job(owner=owner, spec=spec, settings=settings)
        capped = (
            bool(settings.max_concurrent_jobs) and not manifest["spec"]["suspend"]
        )  # suspended or queued: not running
        with self._capacity_lock if capped else contextlib.nullcontext():
            if capped:
                running = self._running_jobs(cache)
                if running >= settings.max_concurrent_jobs:
                    self._write(
                        owner,
                        status.waiting_for_capacity(running, settings.max_concurrent_jobs),
                        cache=cache,
                        logger=logger,
                    )
                    raise WaitingForCapacity(
                        f"{running} Jobs running, cap {settings.max_concurrent_jobs}",
                        delay=settings.capacity_retry_seconds,
                    )
            try:
                job, created = self.kube.create_job(manifest)
            except JobRejected as exc:
                if exc.status == 403:
                    self._write(owner, status.job_forbidden(exc.message), cache=cache, logger=logger)
                    raise kopf.TemporaryError(
                        f"creating the Job is forbidden: {exc.message}", delay=_FORBIDDEN_RETRY_SECONDS
                    ) from exc
                logger.warning("the API server rejected the Job: %s", exc.message)
                self._write(owner, status.job_rejected(exc.message), cache=cache, logger=logger)
                return
            if created:
                with self._guard:
                    self._created_at[(owner.namespace, job["metadata"]["name"])] = self._clock()
                    self._unseen.add((owner.namespace, job["metadata"]["name"]))
        if plan.controller_uid(job) != owner.uid:
            raise kopf.TemporaryError(
                f"Job {job['metadata']['name']} still belongs to a deleted namesake; waiting for it to go", delay=2
            )
        if created:
            metrics.JOBS_CREATED.inc()
            logger.info("created Job %s", job["metadata"]["name"])
            # An Event, not a status write: the status goes to Running when the pod runs, to Pending only if it does not soon.
            qj = {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "metadata": {"name": owner.name, "namespace": owner.namespace, "uid": owner.uid},
            }
            self._post_event(
                qj,
                type="Normal",
                reason=Reason.JOB_CREATED.value,
                message=f"Pending: batch Job {job['metadata']['name']} created",
            )
            if self._schedule is not None and not manifest["spec"]["suspend"]:
                for delay in (PENDING_STATUS_DELAY, PENDING_STATUS_STUCK_AFTER):
                    self._schedule(
                        delay + 0.5,
                        lambda: self._refresh(owner.namespace, owner.name, uid=owner.uid, cache=cache, logger=logger),
                    )

    def _running_jobs(self, cache: Cache) -> int:
        states = cache.job_states()
        with self._guard:
            self._unseen.intersection_update(self._created_at)  # forgotten after _JUST_CREATED_TTL
            self._unseen.difference_update(states)  # the watch shows them now (running or already done)
            unseen = len(self._unseen)
        return sum(states.values()) + unseen

    def _pending_status_due(
        self,
        namespace: str,
        observation: status.Observation,
        previous: dict[str, Any],
        generation: int,
        pods: list[dict[str, Any]],
    ) -> bool:
        with self._guard:
            since = self._created_at.get((namespace, str(observation.job_name)))
        created_ago = None if since is None else self._clock() - since
        starting = not pods or any(status.pod_is_starting(p) for p in pods)  # no pod yet: the Job controller's turn
        return pending_status_due(
            observation, previous, generation=generation, created_ago=created_ago, starting=starting
        )

    def _prune_created(self) -> None:
        now = self._clock()
        with self._guard:
            for key, since in list(self._created_at.items()):
                if now - since > max(_JUST_CREATED_TTL, PENDING_STATUS_STUCK_AFTER) + 60:
                    del self._created_at[key]

    # ----------------------------------------------------------------------- a Job or pod changed

    def refresh_request(self, obj: dict[str, Any], *, kind: str, deleted: bool) -> RefreshRequest | None:
        """None when the event changes nothing the status shows (readiness, finalizers, a deleted pod)."""
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid"))
        namespace, qj_name = meta.get("namespace"), naming.quantization_job_of(meta)
        seen = None
        if deleted:
            with self._guard:
                self._seen.pop(uid, None)
            if kind == "Pod":
                return None
        else:
            seen = status.fingerprint(kind, obj)
            with self._guard:
                if self._seen.get(uid) == seen:
                    return None
        if not namespace or not qj_name:
            return None
        key = (str(namespace), str(qj_name))
        final = (
            plan.is_finished(obj)
            if kind == "Job"
            else str((obj.get("status") or {}).get("phase")) in ("Succeeded", "Failed")
        )
        return RefreshRequest(key=key, ticket=self._ticket(key), source_uid=uid, seen=seen, final=final and not deleted)

    def refresh(self, request: RefreshRequest, *, cache: Cache, logger: logging.Logger) -> None:
        """Serve a refresh request (unless a refresh that started after it already did)."""
        self._refresh(*request.key, cache=cache, logger=logger, ticket=request.ticket)
        if request.seen is not None:
            with self._guard:
                self._seen[request.source_uid] = request.seen

    def seen(self, uid: str) -> tuple[Any, ...] | None:
        """The fingerprint of a Job/pod as of the last refresh it caused (None: none yet)."""
        with self._guard:
            return self._seen.get(uid)

    def _ticket(self, key: Key) -> int:
        with self._guard:
            ticket = self._requested[key] = self._requested.get(key, 0) + 1
            return ticket

    def _lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _refresh(
        self,
        namespace: str,
        name: str,
        *,
        cache: Cache,
        logger: logging.Logger,
        uid: str | None = None,
        ticket: int | None = None,
    ) -> None:
        """Take the object, its current Job and that Job's pods from the cache, and write the status.

        Requests coalesce: one made (``ticket`` taken) before a refresh started reading is covered by it and returns.
        """
        key = (namespace, name)
        ticket = ticket if ticket is not None else self._ticket(key)
        with self._lock(key):
            with self._guard:
                if self._started.get(key, 0) >= ticket:
                    return
                self._started[key] = self._requested[key]
            body = self._newest(cache.quantization_job(namespace, name)) or self.kube.get_quantization_job(
                namespace, name
            )
            for _ in range(2):
                if body is None or (uid is not None and body["metadata"].get("uid") != uid):
                    return
                owner = _owner(body)
                jobs = self._plan(owner, cache=cache, previous_status=body.get("status") or {}, logger=logger)
                if jobs.stale:
                    body = self.kube.get_quantization_job(namespace, name)  # the cached view predates a spec change
                    continue
                if jobs.current is None:
                    return
                pods = cache.pods_of(jobs.current)
                observation = status.observe_job(jobs.current, pods, cache.workload_of(jobs.current))
                if observation is None:
                    return
                if not self._pending_status_due(
                    namespace, observation, body.get("status") or {}, owner.generation, pods
                ):
                    return  # the delayed refreshes scheduled at creation look again
                try:
                    self._apply(body, observation, logger=logger)
                except Conflict:
                    body = self.kube.get_quantization_job(namespace, name)  # the cached view was behind: read it fresh
                    continue
                self._expire_when_recorded(body, jobs.current, logger=logger)
                return
            raise kopf.TemporaryError(f"the status of {namespace}/{name} keeps changing under us", delay=1)

    def _expire_when_recorded(self, body: dict[str, Any], job: dict[str, Any], *, logger: logging.Logger) -> None:
        """Hand a finished Job to its TTL only now that the status holds its result (the TTL is not in the manifest)."""
        ttl = ttl_after_finished(body)
        job_uid = str(job["metadata"].get("uid"))
        if ttl is None or (job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None:
            return
        recorded = self._latest_status(self._newest(body) or body)
        if not plan.finished_for_generation(recorded, _owner(body).generation):
            return
        with self._guard:
            if job_uid in self._expiring:
                return  # patched already; the watch has not shown it yet
            self._expiring.add(job_uid)
        logger.info("result recorded; Job %s expires %d s after it finished", job["metadata"]["name"], ttl)
        self.kube.patch_job_spec(
            body["metadata"]["namespace"], job["metadata"]["name"], {"ttlSecondsAfterFinished": ttl}
        )

    def _newest(self, cached: dict[str, Any] | None) -> dict[str, Any] | None:
        """The cached object, or what our own last patch returned while the watch has not caught up with it."""
        if cached is None:
            return None
        newest = cached
        with self._guard:
            chain = dict(self._written.get(str(cached["metadata"].get("uid"))) or {})
        for _ in range(len(chain)):
            follow = chain.get(str(newest["metadata"].get("resourceVersion")))
            if follow is None:
                break
            newest = follow
        return newest

    def _write(
        self, owner: render.Owner, observation: status.Observation, *, cache: Cache, logger: logging.Logger
    ) -> None:
        """Write an observation made without a Job (invalid spec, waiting for capacity, Job refused)."""
        with self._lock((owner.namespace, owner.name)):
            body = self._newest(cache.quantization_job(owner.namespace, owner.name))
            if body is None or _owner(body).generation < owner.generation:
                body = self.kube.get_quantization_job(owner.namespace, owner.name)
            for _ in range(2):
                if (
                    body is None
                    or body["metadata"].get("uid") != owner.uid
                    or _owner(body).generation != owner.generation
                ):
                    return
                try:
                    self._apply(body, observation, logger=logger)
                    return
                except Conflict:
                    body = self.kube.get_quantization_job(owner.namespace, owner.name)
            raise kopf.TemporaryError(f"the status of {owner.namespace}/{owner.name} keeps changing under us", delay=1)

    def _apply(self, body: dict[str, Any], observation: status.Observation, *, logger: logging.Logger) -> None:
        """The one place a status is written: one merge patch, only if something changed, plus its Events.

        The patch is conditional on the resourceVersion ``body`` was read at (Conflict otherwise), so a status
        computed from a view that is behind is never written.
        """
        meta = body["metadata"]
        generation = int(meta.get("generation") or 1)
        previous = body.get("status") or {}
        if not status.settle(previous, observation, generation=generation):
            return
        desired = status.desired_status(previous, observation, generation=generation, now=self._utc_now())
        self._record_phase(meta["uid"], desired["phase"])
        change = status.diff(previous, desired)
        if not change.changed:
            return
        patch_started = self._clock()
        patched = self.kube.patch_status(
            meta["namespace"], meta["name"], change.patch, resource_version=meta.get("resourceVersion")
        )
        if newly_terminal(previous, desired):
            metrics.RESULT_LATENCY.labels("status_patch").observe(self._clock() - patch_started)
            if desired.get("completionTime"):
                exited = status.epoch_seconds(str(desired["completionTime"]))
                metrics.RESULT_LATENCY.labels("exit_to_status").observe(max(0.0, self._wall_clock() - exited))
        if patched is not None:
            with self._guard:
                chain = self._written.setdefault(meta["uid"], {})
                chain[str(meta.get("resourceVersion"))] = quantization_job_entry(patched)[1]
                while len(chain) > _WRITTEN_KEPT:
                    del chain[next(iter(chain))]
        for event in change.events:
            if event.reason == Reason.JOB_CREATED and not previous:
                continue  # posted when the Job was created
            self._post_event(body, type=event.type, reason=event.reason, message=event.message)
        if change.events:
            logger.info("phase %s (%s): %s", desired["phase"], desired["reason"], desired["message"])
        _record_duration(body.get("spec") or {}, previous, desired)

    # ----------------------------------------------------------------------- metrics bookkeeping

    def _record_phase(self, uid: str, phase: str) -> None:
        with self._guard:
            old = self._phases.get(uid)
            if old == phase:
                return
            if old is not None:
                metrics.JOBS_BY_PHASE.labels(old).dec()
            metrics.JOBS_BY_PHASE.labels(phase).inc()
            self._phases[uid] = phase

    def forget(self, namespace: str, name: str, uid: str) -> None:
        """The QuantizationJob is gone: drop its bookkeeping (its Job and pods go by garbage collection)."""
        key = (namespace, name)
        with self._guard:
            old = self._phases.pop(uid, None)
            if old is not None:
                metrics.JOBS_BY_PHASE.labels(old).dec()
            self._locks.pop(key, None)
            self._requested.pop(key, None)
            self._started.pop(key, None)
            self._written.pop(uid, None)


def newly_terminal(previous: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether ``desired`` is the first terminal status of its generation (the write that records the result)."""
    terminal = plan.TERMINAL_PHASES
    return desired["phase"] in terminal and not (
        previous.get("phase") in terminal and previous.get("observedGeneration") == desired["observedGeneration"]
    )


def _record_duration(spec: dict[str, Any], previous: dict[str, Any], desired: dict[str, Any]) -> None:
    if not newly_terminal(previous, desired):
        return
    if desired.get("startTime") and desired.get("completionTime"):
        start = datetime.fromisoformat(str(desired["startTime"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(desired["completionTime"]).replace("Z", "+00:00"))
        metrics.RUN_DURATION.labels(str(spec.get("method", "")), desired["phase"]).observe(
            max(0.0, (end - start).total_seconds())
        )
