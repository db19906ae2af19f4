"""Stages ``quantize`` and ``evaluate``: the backend quantizes with the spec's method; the artifact is measured.

``quantize_request`` is the one place a ``QuantizeRequest`` is built from the run, for every stage that calls a
backend (baseline export, quantize, the layer analysis, the degrade and remedy ladders).
"""

from __future__ import annotations

import dataclasses

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import backend_options
from edgequant.backends.base import QuantizeRequest
from edgequant.data.loader import prepare_set
from edgequant.worker.context import RunContext
from edgequant.worker.stages.data import decode_progress
from edgequant.worker.stages.measure import agreement_with_fp32, describe, measure_artifact, model_size


def quantize_request(ctx: RunContext, *, method: api.Method | None = None) -> QuantizeRequest:
    """What a backend needs, built the same way for every stage that calls one."""
    assert ctx.model_path is not None
    spec = ctx.spec
    training = ctx.sets.get("training")
    calibration = ctx.sets.get("calibration")
    manual = spec.mixed_precision.mode is api.MixedPrecisionMode.MANUAL
    return QuantizeRequest(
        options=backend_options(spec, method),
        model_path=ctx.model_path,
        workdir=ctx.workdir / "backend",
        calibration=calibration.batches() if calibration is not None else None,
        training=training.batches(batch_size=spec.training.batch_size if spec.training else 32)
        if training is not None
        else None,
        keep_float=list(spec.mixed_precision.pinned_layers) if manual else [],
        log=ctx.log,
        stores=ctx.stores,
    )


def remedy_request(ctx: RunContext, method: api.Method, spec: api.QuantizationJobSpec) -> QuantizeRequest:
    """A QuantizeRequest for a changed spec (the remedy ladder): calibration sampled again when its size changed."""
    calibration = ctx.sets.get("calibration")
    index = ctx.indexes.get("calibration")
    if (
        spec.calibration is not None
        and index is not None
        and calibration is not None
        and spec.calibration.samples != calibration.requested
    ):
        calibration = prepare_set(
            index,
            name="calibration",
            contract=spec.model.input,
            samples=spec.calibration.samples,
            seed=spec.calibration.seed,
            progress=decode_progress(ctx, "calibration"),
        )
        ctx.log(f"remedy: calibration on {len(calibration)} samples")
    training = ctx.sets.get("training")
    request = quantize_request(ctx, method=method)
    return dataclasses.replace(
        request,
        options=backend_options(spec, method),
        calibration=calibration.batches() if calibration is not None else None,
        training=training.batches(batch_size=spec.training.batch_size if spec.training else 32)
        if training is not None
        else None,
    )


def quantize(ctx: RunContext) -> None:
    """Quantize with the spec's method (or the one a degrade ladder chose)."""
    assert ctx.backend is not None
    method = ctx.method or ctx.spec.method
    artifact = ctx.backend.quantize(quantize_request(ctx, method=method))
    ctx.artifact = artifact
    ctx.method = artifact.method
    ctx.notes.extend(artifact.notes)
    ctx.log(f"{artifact.path.name}: {model_size(artifact.path):,} bytes, input {artifact.input.dtype}")


def evaluate_quantized(ctx: RunContext) -> None:
    """Measure the artifact like the baseline, and its agreement with FP32."""
    assert ctx.backend is not None and ctx.artifact is not None
    record = measure_artifact(ctx, ctx.artifact, rescored=True)
    ctx.quantized = record
    ctx.agreement = agreement_with_fp32(ctx, record.evaluation)
    ctx.log(describe(record))
