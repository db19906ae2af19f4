"""kopf handlers of QuantizationSweeps: thin, each hands one sweep to ``sweep.reconcile``.

A sweep is reconciled when it changes, when one of its child QuantizationJobs changes (their status drives the
sweep's) and when its report Job changes. Imported by ``edgequant operator`` beside ``handlers``.
"""

from __future__ import annotations

from typing import Any

import kopf

from edgequant.api import sweep as sweep_api
from edgequant.api import v1alpha1 as api
from edgequant.controller import handlers, sweep
from edgequant.sweep import plan


def _reconcile(namespace: str | None, name: str | None, memo: kopf.Memo, logger: kopf.Logger) -> None:
    if namespace and name:
        handlers._guarded(
            "quantizationsweep",
            sweep.reconcile,
            namespace,
            name,
            kube_client=handlers._reconciler(memo).kube,
            settings=memo["settings"],
            logger=logger,
        )


@kopf.on.create(api.GROUP, api.VERSION, sweep_api.PLURAL)
@kopf.on.resume(api.GROUP, api.VERSION, sweep_api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, sweep_api.PLURAL, field="spec")
def quantization_sweep_changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    _reconcile(body.metadata.namespace, body.metadata.name, memo, logger)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, labels={plan.LABEL_SWEEP: kopf.PRESENT})
def sweep_cell_event(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    _reconcile(body.metadata.namespace, sweep.sweep_of(dict(body.metadata)), memo, logger)


@kopf.on.event("batch", "v1", "jobs", labels={sweep.LABEL_REPORT: kopf.PRESENT})
def sweep_report_job_event(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    _reconcile(body.metadata.namespace, sweep.sweep_of(dict(body.metadata)), memo, logger)


@kopf.on.delete(api.GROUP, api.VERSION, sweep_api.PLURAL, optional=True)
async def quantization_sweep_deleted(body: kopf.Body, **_: Any) -> None:
    """Bookkeeping only (no finalizer): the children and the report Job go by owner-reference garbage collection."""
    sweep.forget(str(body.metadata.namespace), str(body.metadata.name))


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in (sweep_api.SweepPhase.COMPLETED, sweep_api.SweepPhase.FAILED)


def register_resync(seconds: float) -> None:
    """The safety net for lost events, with the QuantizationJobs' period (0: none)."""
    if seconds > 0:

        def quantization_sweep_resync(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
            _reconcile(body.metadata.namespace, body.metadata.name, memo, logger)

        kopf.timer(
            api.GROUP,
            api.VERSION,
            sweep_api.PLURAL,
            interval=seconds,
            initial_delay=seconds,
            idle=seconds / 2,
            when=_unfinished,
        )(quantization_sweep_resync)
