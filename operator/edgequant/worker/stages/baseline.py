"""Stage ``baseline``: load the backend and measure the FP32 model, in the artifact's runtime when the backend can
export it there; warn when FP32 scores no better than chance (labels that are not the model's classes)."""

from __future__ import annotations

from edgequant.analysis.gate import chance_check
from edgequant.api.backend_options import backend_options
from edgequant.backends import registry
from edgequant.backends.base import BaselineExport
from edgequant.report.schema import DataFinding, Severity
from edgequant.util.errors import InvalidInputError
from edgequant.worker.context import ModelRecord, RunContext
from edgequant.worker.stages.analysis import scaling_mismatch
from edgequant.worker.stages.measure import describe, evaluate_predictor, model_size
from edgequant.worker.stages.quantize import quantize_request


def evaluate_baseline(ctx: RunContext) -> None:
    """Load the backend and measure the FP32 model, in the artifact's runtime when the backend can export it."""
    assert ctx.model_path is not None
    try:
        ctx.backend = registry.backend_for(ctx.spec.method, stores=ctx.stores)
    except ModuleNotFoundError as exc:
        raise InvalidInputError(
            f"spec.method {ctx.spec.method.value} needs {exc.name}, which this image lacks: "
            f"run it in the quantizer-{ctx.spec.method.family.value} image"
        ) from exc
    request = quantize_request(ctx)
    if isinstance(ctx.backend, BaselineExport):
        exported = ctx.backend.export_baseline(request)
        predictor = ctx.backend.load(exported.path, options=backend_options(ctx.spec))
        record = ModelRecord(
            path=exported.path, format=exported.format, size_bytes=model_size(exported.path), input=exported.input
        )
    else:
        predictor = ctx.backend.load(ctx.model_path, options=backend_options(ctx.spec))
        fmt = ctx.spec.model.resolved_format
        record = ModelRecord(
            path=ctx.model_path,
            format=fmt.value if fmt else "source",
            size_bytes=ctx.source_size_bytes or 0,
            input=predictor.input,
        )
    record.evaluation = evaluate_predictor(ctx, predictor, label="FP32", baseline=True, rescored=True)
    ctx.baseline = record
    ctx.log(describe(record))
    _check_chance(ctx)


def _check_chance(ctx: RunContext) -> None:
    """FP32 no better than chance on labeled data: the labels are not the model's class indices (a finding, not a failure).

    Quiet when the other input scaling scores better on the same labels: that is a preprocessing mismatch,
    which the diagnostics report (and which fails the gate)."""
    data, e = ctx.sets.get("evaluation"), ctx.baseline.evaluation if ctx.baseline else None
    if data is None or not data.labeled or e is None or e.all_outputs is None or e.predictions.size != len(data):
        return
    check = chance_check(e.predictions, data.labels, outputs=int(e.all_outputs.shape[1]))
    if check is None or not check.fired:
        return
    if scaling_mismatch(ctx) is not None:
        # the other input scaling scores far better on the same labels: the inputs are wrong, not the labels
        ctx.log(
            "FP32 scores no better than chance with the configured input scaling; the diagnostics report the preprocessing mismatch"
        )
        return
    finding = DataFinding(
        severity=Severity.WARNING,
        code="labels-do-not-match-model",
        dataset="evaluation",
        message=check.message(),
        count=check.samples,
    )
    ctx.findings.append(finding)
    ctx.warnings.append(f"evaluation: {finding.message}")
    ctx.log(f"warning: evaluation: {finding.message}")
