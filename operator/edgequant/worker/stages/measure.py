"""Measuring a model on the run's evaluation set with the one evaluator: the FP32 baseline, each quantized
candidate, the models the layer analysis builds. Shared by the baseline, quantize and analysis stages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgequant.analysis import diagnostics
from edgequant.api.backend_options import backend_options
from edgequant.backends.base import Predictor, QuantizedArtifact
from edgequant.worker.context import ModelRecord, RunContext
from edgequant.worker.evaluate import EvaluationResult, agreement, evaluate

#: FP32's outputs on the evaluation set, kept (memory-mapped) so every candidate's SQNR against them needs no FP32 rerun.
FP32_OUTPUTS = "fp32-outputs.npy"


def model_size(path: Path) -> int:
    """Bytes of a model file, or of every file below a model folder (SavedModel)."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def evaluate_predictor(
    ctx: RunContext,
    predictor: Predictor,
    *,
    label: str,
    latency_runs: int = 50,
    baseline: bool = False,
    rescored: bool = False,
) -> EvaluationResult:
    """Score on the evaluation set; ``baseline``: keep every output (FP32, the SQNR reference) instead of
    comparing against it; ``rescored``: also score its first inputs with the other input scaling (the
    preprocessing-mismatch diagnostic reads that instead of running the model again; needs labels)."""
    data = ctx.sets.get("evaluation")
    reference = (
        ctx.baseline.evaluation.all_outputs if not baseline and ctx.baseline and ctx.baseline.evaluation else None
    )
    alternative: Callable[[np.ndarray], np.ndarray] | None = None
    if rescored and data is not None and data.labeled:
        contract = ctx.spec.model.input
        factor, _words = diagnostics.alternative_input_scale(contract.scaling)

        def rescaled(batch: np.ndarray) -> np.ndarray:
            return diagnostics.rescale_inputs(batch, contract, factor)

        alternative = rescaled
    return evaluate(
        predictor=predictor,
        data=data.batches() if data is not None else None,
        latency_runs=latency_runs,
        progress=lambda done, total: ctx.progress.advance(task=f"score {label}", done=done, total=total),
        labeled=data.labeled if data is not None else True,
        reference=reference,
        keep_outputs=ctx.workdir / FP32_OUTPUTS if baseline else None,
        alternative=alternative,
        channel_axis=diagnostics.channel_axis(ctx.spec.model.input),
    )


def measure_artifact(
    ctx: RunContext, artifact: QuantizedArtifact, *, label: str = "quantized", rescored: bool = False
) -> ModelRecord:
    """Load, score and time a quantized artifact."""
    assert ctx.backend is not None
    predictor = ctx.backend.load(artifact.path, options=backend_options(ctx.spec))
    record = ModelRecord(
        path=artifact.path, format=artifact.method.value, size_bytes=model_size(artifact.path), input=predictor.input
    )
    record.evaluation = evaluate_predictor(ctx, predictor, label=label, rescored=rescored)
    return record


def score_model(ctx: RunContext, path: Path, label: str) -> EvaluationResult:
    """Score a model file on the evaluation set, without timing it (the layer analysis's models)."""
    assert ctx.backend is not None
    return evaluate_predictor(
        ctx, ctx.backend.load(path, options=backend_options(ctx.spec)), label=label, latency_runs=0
    )


def agreement_with_fp32(ctx: RunContext, evaluation: EvaluationResult | None) -> float | None:
    """Top-1 agreement of an evaluation with the FP32 baseline's (None without both)."""
    base = ctx.baseline.evaluation if ctx.baseline is not None else None
    return agreement(base, evaluation) if base is not None and evaluation is not None else None


def describe(record: ModelRecord) -> str:
    """One log line: format, size, accuracy (or why not), SQNR and latency."""
    e = record.evaluation
    acc = (
        f"top-1 {e.top1:.4f}"
        if e and e.top1 is not None
        else ("accuracy n/a (unlabeled evaluation data)" if e and e.samples else "accuracy not measured")
    )
    if e and e.sqnr_db is not None:
        acc += f", output SQNR {e.sqnr_db:.1f} dB vs FP32"
    lat = f", {e.latency_ms:.3f} ms/image" if e and e.latency_ms is not None else ""
    return f"{record.format}: {record.size_bytes:,} bytes, {acc}{lat}"
