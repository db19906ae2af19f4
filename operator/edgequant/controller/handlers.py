"""kopf handlers: thin. Each hands its object to one function of ``reconcile`` through ``_guarded``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from edgequant.api import v1alpha1 as api
from edgequant.controller import cache, kube, metrics, naming, queueing, reconcile
from edgequant.controller.settings import OperatorSettings

_MANAGED = {naming.LABEL_MANAGED_BY: naming.MANAGED_BY}
#: A handler that failed for a reason nobody foresaw is retried this much later, never in a hot loop.
UNEXPECTED_ERROR_DELAY = 60.0
#: How long a Job/pod event waits before refreshing, so that the events of one burst share a refresh.
EVENT_DEBOUNCE_SECONDS = 1.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_settings: OperatorSettings = memo["settings"]
    # Progress and diff-base in annotations: the status belongs to status.py alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="edgequant.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="edgequant.io", key="last-handled-spec")
    settings.posting.level = logging.CRITICAL  # Events are posted explicitly, on transitions, not from log lines
    # No cluster-wide namespace/CRD scanning: the chart grants none (least privilege); namespaces come from settings.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = operator_settings.workers
    # Status refreshes get threads of their own, so that a burst of new QuantizationJobs (whose handlers create
    # Jobs) never holds back the status of the ones already running.
    memo["refresh_executor"] = concurrent.futures.ThreadPoolExecutor(
        max_workers=operator_settings.workers, thread_name_prefix="edgequant-refresh"
    )
    kube.configure(connections=2 * operator_settings.workers + 4)
    logging.getLogger("kopf.objects").addFilter(_quiet_event_handlers)
    metrics.serve(operator_settings.metrics_port)


@kopf.on.cleanup()
def stop_refreshes(memo: kopf.Memo, **_: Any) -> None:
    executor = memo.get("refresh_executor")
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


def _quiet_event_handlers(record: logging.LogRecord) -> bool:
    """Drop kopf's "Handler 'pod_event' succeeded." lines: one per pod/Job event or resync, thousands per minute at scale."""
    return not (
        record.levelno == logging.INFO
        and str(record.msg).startswith(("Handler 'pod_event'", "Handler 'batch_job_event'", "Handler 'workload_event'", "Timer 'quantization_job_resync'"))
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
def quantization_job_changed(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any) -> None:
    _guarded("quantizationjob", reconcile.reconcile, dict(body), cache=_cache(kwargs), settings=memo["settings"], logger=logger)


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in ("Succeeded", "Failed")


def quantization_job_resync(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any) -> None:
    """Safety net: Job and pod events drive the status; a lost one, or a Job deleted by hand, is made up for here."""
    _guarded("resync", reconcile.reconcile, dict(body), cache=_cache(kwargs), settings=memo["settings"], logger=logger)


def register_resync(seconds: float) -> None:
    """The resync timer's period is a setting, so it is registered at start rather than at import (0: none)."""
    if seconds > 0:
        kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=seconds, initial_delay=seconds, idle=seconds / 2, when=_unfinished)(quantization_job_resync)


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL, optional=True)
async def quantization_job_deleted(body: kopf.Body, **_: Any) -> None:
    """Bookkeeping only (optional: no finalizer); the Job and pods go by owner-reference garbage collection."""
    reconcile.forget(str(body.metadata.namespace), str(body.metadata.name), str(body.metadata.uid))


# --------------------------------------------------------------------------- their Jobs and pods


async def _refresh_later(handler: str, obj: dict[str, Any], *, kind: str, deleted: bool, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any) -> None:
    """Wait a moment so that a burst of events (Job created, its pod created, the Job counts it) costs one refresh."""
    request = reconcile.refresh_request(obj, kind=kind, deleted=deleted)
    if request is None:
        return
    asked = time.monotonic()
    await asyncio.sleep(EVENT_DEBOUNCE_SECONDS)

    def run() -> None:
        started = time.monotonic()
        metrics.REFRESH_WAIT.observe(started - asked)
        try:
            _guarded(handler, reconcile.refresh, request, cache=_cache(kwargs), logger=logger)
        finally:
            metrics.REFRESH_WORK.observe(time.monotonic() - started)

    context = contextvars.copy_context()  # kopf.event() finds the operator's settings in a context variable
    await asyncio.get_running_loop().run_in_executor(memo["refresh_executor"], context.run, run)


@kopf.on.event("batch", "v1", "jobs", labels=_MANAGED)
async def batch_job_event(body: kopf.Body, type: str | None, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any) -> None:  # noqa: A002  kopf's name
    await _refresh_later("job", dict(body), kind="Job", deleted=type == "DELETED", memo=memo, logger=logger, **kwargs)


@kopf.on.event("", "v1", "pods", labels=_MANAGED)
async def pod_event(body: kopf.Body, type: str | None, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any) -> None:  # noqa: A002  kopf's name
    await _refresh_later("pod", dict(body), kind="Pod", deleted=type == "DELETED", memo=memo, logger=logger, **kwargs)


# --------------------------------------------------------------------------- Kueue Workloads of queued Jobs


async def edgequant_workloads(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    entry = cache.workload_entry(body)
    return dict([entry]) if entry else None


async def workload_event(body: kopf.Body, type: str | None, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any) -> None:  # noqa: A002  kopf's name
    """A Workload's conditions changed (quota reserved or not, admitted, evicted): refresh its Job's QuantizationJob."""
    workload = dict(body)
    namespace, job_uid = str(body.metadata.namespace), queueing.workload_job_uid(workload)
    qj_name = _cache(kwargs).quantization_job_of_job_uid(namespace, job_uid) if job_uid else None
    if qj_name is None:
        return  # another controller's Job
    # Tagged with its QuantizationJob the way our Jobs and pods are, so that it queues for a refresh like them.
    meta = {**workload.get("metadata", {}), "annotations": {naming.ANNOTATION_JOB: qj_name}}
    await _refresh_later("workload", {**workload, "metadata": meta}, kind="Workload", deleted=type == "DELETED", memo=memo, logger=logger, **kwargs)


def register_kueue(enabled: bool) -> None:
    """Watch Kueue's Workloads (settings.kueue), registered at start: without Kueue's CRDs there is nothing to watch."""
    if enabled:
        labels = {queueing.WORKLOAD_JOB_UID_LABEL: kopf.PRESENT}
        kopf.index(queueing.KUEUE_GROUP, queueing.KUEUE_VERSION, queueing.WORKLOADS, labels=labels)(edgequant_workloads)
        kopf.on.event(queueing.KUEUE_GROUP, queueing.KUEUE_VERSION, queueing.WORKLOADS, labels=labels)(workload_event)
