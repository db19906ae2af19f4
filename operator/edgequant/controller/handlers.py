"""kopf handlers: thin. Each validates input, calls one function of ``reconcile``, returns."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from edgequant.api import v1alpha1 as api
from edgequant.controller import metrics, naming, reconcile
from edgequant.controller.settings import OperatorSettings

_MANAGED = {naming.LABEL_MANAGED_BY: naming.MANAGED_BY}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Progress and diff-base in annotations: status belongs to status.py alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="edgequant.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="edgequant.io", key="last-handled-spec")
    settings.posting.level = logging.WARNING  # our own Events are posted explicitly
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    operator_settings: OperatorSettings = memo["settings"]
    metrics.serve(operator_settings.metrics_port)


def _guarded(handler: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except kopf.TemporaryError:
        metrics.RECONCILE_ERRORS.labels(handler).inc()
        raise
    except Exception:
        metrics.RECONCILE_ERRORS.labels(handler).inc()
        raise


@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL, field="spec")
def quantization_job_changed(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    _guarded("quantizationjob", reconcile.reconcile, dict(body), settings=memo["settings"], logger=logger)


@kopf.on.event("batch", "v1", "jobs", labels=_MANAGED)
def batch_job_event(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    _guarded("job", reconcile.sync_owner, dict(body.metadata), settings=memo["settings"], logger=logger)


@kopf.on.event("", "v1", "pods", labels=_MANAGED)
def pod_event(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    _guarded("pod", reconcile.sync_owner, dict(body.metadata), settings=memo["settings"], logger=logger)


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL, optional=True)
def quantization_job_deleted(body: kopf.Body, **_: Any) -> None:
    """Bookkeeping only (optional: no finalizer); the Job and pods go by owner-reference GC."""
    reconcile.forget(str(body.metadata.namespace), str(body.metadata.name), str(body.metadata.uid))
