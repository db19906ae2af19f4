"""kopf handlers: thin. Each hands its object to one method of the ``Reconciler`` in kopf's memo through ``_guarded``.

kopf keeps what it needs between handler runs (the last handled spec, retry counts) in memory, not in annotations:
writing them would cost API writes on every job. After a restart every object counts as new, so the create
handler (the same idempotent reconcile) runs for each once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from edgequant.api import v1alpha1 as api
from edgequant.controller import cache, kube, metrics, naming, queueing, reconcile, refresh_pool, status
from edgequant.controller.reconcile import Reconciler
from edgequant.controller.refresh_pool import RefreshPool
from edgequant.controller.settings import OperatorSettings

_MANAGED = {naming.LABEL_MANAGED_BY: naming.MANAGED_BY}
#: A handler that failed for a reason nobody foresaw is retried this much later, never in a hot loop.
UNEXPECTED_ERROR_DELAY = 60.0
#: How long a Job/pod event waits before refreshing, so that the events of one burst share a refresh.
EVENT_DEBOUNCE_SECONDS = 1.0
#: Tries of the reconcile a deleted Job causes (waiting for capacity, a conflict); then the resync timer's turn.
JOB_GONE_RETRIES = 5


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_settings: OperatorSettings = memo["settings"]
    # Progress and diff-base in memory (no write per job); the status belongs to status.py alone.
    settings.persistence.progress_storage = MemoryProgressStorage(prefix="edgequant.io")
    settings.persistence.diffbase_storage = memo["diffbase"] = MemoryDiffBaseStorage(
        prefix="edgequant.io", key="last-handled-spec"
    )
    settings.posting.level = logging.CRITICAL  # Events are posted explicitly, on transitions, not from log lines
    # No cluster-wide namespace/CRD scanning: the chart grants none (least privilege); namespaces come from settings.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = operator_settings.workers
    # Status refreshes get threads of their own, so that a burst of new QuantizationJobs (whose handlers create
    # Jobs) never holds back the status of the ones already running; those that may write a result go first.
    pool = memo["refresh_pool"] = RefreshPool(2 * operator_settings.workers)
    loop = asyncio.get_running_loop()

    def schedule(delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` in a refresh thread ``delay`` seconds from now (called from handler threads)."""
        context = contextvars.copy_context()  # kopf.event() finds the operator's settings in a context variable

        def submit() -> None:
            with contextlib.suppress(RuntimeError):  # the operator is stopping
                pool.submit(lambda: context.run(_guarded, "pending", fn), rank=refresh_pool.OTHER)

        loop.call_soon_threadsafe(loop.call_later, delay, submit)

    memo["reconciler"] = Reconciler(
        # One connection per thread that calls the API server: kopf's handler threads and the refresh pool's.
        kube=kube.KubeClient.from_environment(connections=3 * operator_settings.workers + 4),
        settings=operator_settings,
        schedule=schedule,
    )
    logging.getLogger("kopf.objects").addFilter(_quiet_event_handlers)
    metrics.serve(operator_settings.metrics_port)


@kopf.on.cleanup()
def stop_refreshes(memo: kopf.Memo, **_: Any) -> None:
    pool = memo.get("refresh_pool")
    if pool is not None:
        pool.shutdown()


def _quiet_event_handlers(record: logging.LogRecord) -> bool:
    """Drop kopf's "Handler 'pod_event' succeeded." lines: one per pod/Job event or resync, thousands per minute at scale."""
    return not (
        record.levelno == logging.INFO
        and str(record.msg).startswith(
            (
                "Handler 'pod_event'",
                "Handler 'batch_job_event'",
                "Handler 'workload_event'",
                "Timer 'quantization_job_resync'",
            )
        )
    )


def _guarded(handler: str, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """The one place failures become kopf's retry decisions, and are counted."""
    try:
        fn(*args, **kwargs)
    except reconcile.WaitingForCapacity:
        raise
    except (kopf.TemporaryError, kopf.PermanentError):
        metrics.RECONCILE_ERRORS.labels(handler).inc()
        raise
    except ApiException as exc:
        metrics.RECONCILE_ERRORS.labels(handler).inc()
        raise kube.translate(exc, f"{handler} handler") from exc
    except Exception as exc:
        metrics.RECONCILE_ERRORS.labels(handler).inc()
        logging.getLogger(__name__).exception("unexpected failure in the %s handler", handler)
        raise kopf.TemporaryError(f"unexpected {type(exc).__name__}: {exc}", delay=UNEXPECTED_ERROR_DELAY) from exc


class MemoryProgressStorage(kopf.AnnotationsProgressStorage):
    """Handler progress (retry counts, delays) in this process's memory; only a retry's wake-up touches the object."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._records: dict[tuple[str, str], Any] = {}

    def fetch(self, *, key: Any, body: kopf.Body) -> Any:
        return self._records.get((str(body.metadata.uid), str(key)))

    def store(self, *, key: Any, record: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records[(str(body.metadata.uid), str(key))] = dict(record)

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records.pop((str(body.metadata.uid), str(key)), None)


class MemoryDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """The last handled spec in this process's memory: kopf tells updates from no-ops without writing it to the object."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._essences: dict[str, Any] = {}

    def fetch(self, *, body: kopf.Body) -> Any:
        return self._essences.get(str(body.metadata.uid))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        self._essences[str(body.metadata.uid)] = essence

    def forget(self, uid: str) -> None:
        self._essences.pop(uid, None)


def _reconciler(memo: kopf.Memo) -> Reconciler:
    reconciler: Reconciler = memo["reconciler"]
    return reconciler


def _cache(kwargs: dict[str, Any]) -> cache.Cache:
    return cache.Cache(
        quantization_jobs=kwargs[cache.QUANTIZATION_JOBS_INDEX],
        jobs=kwargs[cache.JOBS_INDEX],
        pods=kwargs[cache.PODS_INDEX],
        workloads=kwargs.get(cache.WORKLOADS_INDEX, {}),
    )


# --------------------------------------------------------------------------- watch caches
# Async on purpose: kopf runs sync handlers in its thread pool, where every watch event's cache update would
# queue behind the handlers that wait on the API server (Job creation, resync). These are pure and instant.


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
async def edgequant_quantizationjobs(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return dict([cache.quantization_job_entry(body)])


@kopf.index("batch", "v1", "jobs", labels=_MANAGED)
async def edgequant_jobs(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    entry = cache.job_entry(body)
    return dict([entry]) if entry else None


@kopf.index("", "v1", "pods", labels=_MANAGED)
async def edgequant_pods(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    entry = cache.pod_entry(body)
    return dict([entry]) if entry else None


# --------------------------------------------------------------------------- QuantizationJobs


@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL, field="spec")
def quantization_job_changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    _guarded("quantizationjob", _reconciler(memo).reconcile, dict(body), cache=_cache(kwargs), logger=logger)


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in ("Succeeded", "Failed")


def quantization_job_resync(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """Safety net: Job and pod events drive the status and recreate deleted Jobs; a lost event is made up for here."""
    _guarded("resync", _reconciler(memo).reconcile, dict(body), cache=_cache(kwargs), logger=logger)


def register_resync(seconds: float, registry: kopf.OperatorRegistry | None = None) -> None:
    """The resync timer's period is a setting, so it is registered at start rather than at import (0: none).

    kopf gives every timer a finalizer on its objects (added while ``when`` holds, removed after): two writes per
    job. This timer keeps nothing running that an object's deletion would have to wait for, so it goes without.
    """
    if seconds <= 0:
        return
    staging = kopf.OperatorRegistry()
    kopf.timer(
        api.GROUP,
        api.VERSION,
        api.PLURAL,
        interval=seconds,
        initial_delay=seconds,
        idle=seconds / 2,
        when=_unfinished,
        registry=staging,
    )(quantization_job_resync)
    target = registry if registry is not None else kopf.get_default_registry()
    for handler in staging._spawning.get_all_handlers():  # noqa: SLF001  kopf has no public switch for this
        target._spawning.append(dataclasses.replace(handler, requires_finalizer=False))  # noqa: SLF001


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL, optional=True)
async def quantization_job_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Bookkeeping only (optional: no finalizer); the Job and pods go by owner-reference garbage collection."""
    _reconciler(memo).forget(str(body.metadata.namespace), str(body.metadata.name), str(body.metadata.uid))
    memo["diffbase"].forget(str(body.metadata.uid))


# --------------------------------------------------------------------------- their Jobs and pods


async def _refresh_later(
    handler: str, obj: dict[str, Any], *, kind: str, deleted: bool, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Refresh the status of the event's QuantizationJob: at once, ahead of other refreshes, when the event may
    decide its result (a pod ended, a Job concluded); otherwise a moment later, so that a burst of events (Job
    created, its pod created, the Job counts it) costs one refresh.

    A deleted Job reconciles its QuantizationJob instead: it is recreated (deleted by hand), the next generation's
    Job is created (the old one is gone with its pods), or nothing happens (its TTL expired after the result).
    """
    reconciler = _reconciler(memo)
    request = reconciler.refresh_request(obj, kind=kind, deleted=deleted)
    gone = kind == "Job" and deleted
    if request is None and not gone:
        return
    asked = time.monotonic()
    result = request is not None and request.final
    # The steps of the result's way (a pod that ended), as metrics.RESULT_LATENCY.
    ended_pod = result and kind == "Pod"
    if ended_pod and (exited := status.exited_at(obj)) is not None:
        metrics.RESULT_LATENCY.labels("exit_to_event").observe(max(0.0, time.time() - exited))
    if not result:
        await asyncio.sleep(EVENT_DEBOUNCE_SECONDS)

    def run() -> None:
        started = time.monotonic()
        metrics.REFRESH_WAIT.observe(started - asked)
        if ended_pod:
            metrics.RESULT_LATENCY.labels("event_to_refresh").observe(started - asked)
        try:
            if gone:
                _guarded(handler, reconciler.job_gone, obj, cache=_cache(kwargs), logger=logger)
            elif request is not None:
                _guarded(handler, reconciler.refresh, request, cache=_cache(kwargs), logger=logger)
        finally:
            metrics.REFRESH_WORK.observe(time.monotonic() - started)
            if ended_pod:
                metrics.RESULT_LATENCY.labels("refresh").observe(time.monotonic() - started)

    context = contextvars.copy_context()  # kopf.event() finds the operator's settings in a context variable
    pool: RefreshPool = memo["refresh_pool"]
    rank = refresh_pool.RESULT if result else refresh_pool.OTHER
    for _ in range(JOB_GONE_RETRIES):
        try:
            await asyncio.wrap_future(pool.submit(lambda: context.run(run), rank=rank))
            return
        except kopf.TemporaryError as exc:  # counted by _guarded; an event handler has no kopf retries
            if not gone:
                return  # the next event or the resync refreshes again
            await asyncio.sleep(exc.delay or 1.0)  # a deleted Job must not be forgotten: try again


@kopf.on.event("batch", "v1", "jobs", labels=_MANAGED)
async def batch_job_event(
    body: kopf.Body, type: str | None, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:  # noqa: A002  kopf's name
    await _refresh_later("job", dict(body), kind="Job", deleted=type == "DELETED", memo=memo, logger=logger, **kwargs)


@kopf.on.event("", "v1", "pods", labels=_MANAGED)
async def pod_event(body: kopf.Body, type: str | None, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:  # noqa: A002  kopf's name
    await _refresh_later("pod", dict(body), kind="Pod", deleted=type == "DELETED", memo=memo, logger=logger, **kwargs)


# --------------------------------------------------------------------------- Kueue Workloads of queued Jobs


async def edgequant_workloads(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    entry = cache.workload_entry(body)
    return dict([entry]) if entry else None


async def workload_event(
    body: kopf.Body, type: str | None, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:  # noqa: A002  kopf's name
    """A Workload's conditions changed (quota reserved or not, admitted, evicted): refresh its Job's QuantizationJob."""
    workload = dict(body)
    namespace, job_uid = str(body.metadata.namespace), queueing.workload_job_uid(workload)
    qj_name = _cache(kwargs).quantization_job_of_job_uid(namespace, job_uid) if job_uid else None
    if qj_name is None:
        return  # another controller's Job
    # Tagged with its QuantizationJob the way our Jobs and pods are, so that it queues for a refresh like them.
    meta = {**workload.get("metadata", {}), "annotations": {naming.ANNOTATION_JOB: qj_name}}
    await _refresh_later(
        "workload",
        {**workload, "metadata": meta},
        kind="Workload",
        deleted=type == "DELETED",
        memo=memo,
        logger=logger,
        **kwargs,
    )


def register_kueue(enabled: bool) -> None:
    """Watch Kueue's Workloads (settings.kueue), registered at start: without Kueue's CRDs there is nothing to watch."""
    if enabled:
        labels = {queueing.WORKLOAD_JOB_UID_LABEL: kopf.PRESENT}
        kopf.index(queueing.KUEUE_GROUP, queueing.KUEUE_VERSION, queueing.WORKLOADS, labels=labels)(edgequant_workloads)
        kopf.on.event(queueing.KUEUE_GROUP, queueing.KUEUE_VERSION, queueing.WORKLOADS, labels=labels)(workload_event)
