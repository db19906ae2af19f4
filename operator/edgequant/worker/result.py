"""The compact WorkerResult of a run: the termination message the operator turns into status.results."""

from __future__ import annotations

from edgequant.api import v1alpha1 as api
from edgequant.api.result import WorkerResult
from edgequant.report.build import accuracy_drop, artifact_input_contract, compression_ratio, output_sqnr
from edgequant.worker.context import ModelRecord, RunContext

#: Warnings carried in the termination message (the report has all of them).
RESULT_WARNINGS = 5
_WARNING_CHARS = 200


def _measurement(record: ModelRecord | None, metric: api.Metric) -> api.ModelMeasurement | None:
    if record is None:
        return None
    e = record.evaluation
    return api.ModelMeasurement(
        accuracy=e.accuracy(metric) if e else None, size_bytes=record.size_bytes, latency_ms=e.latency_ms if e else None
    )


def results(ctx: RunContext) -> api.Results:
    """The status.results the operator will show: measurements even on failure, the artifact only when published."""
    artifact = ctx.uploads.get("artifact")
    report = ctx.uploads.get("report")
    return api.Results(
        artifact=api.ArtifactInfo(uri=artifact.uri, sha256=artifact.sha256, size_bytes=artifact.size_bytes)
        if artifact
        else None,
        method=ctx.method if artifact else None,
        baseline=_measurement(ctx.baseline, ctx.metric),
        quantized=_measurement(ctx.quantized, ctx.metric),
        compression_ratio=compression_ratio(ctx),
        accuracy_drop=accuracy_drop(ctx),
        agreement=ctx.agreement,
        sqnr_db=output_sqnr(ctx),
        degraded=ctx.degraded,
        rung=_rung(ctx) if artifact else None,
        sensitive_layers=ctx.analysis.sensitive_layers(),
        pinned_layers=list(ctx.analysis.report.mixed_precision.pinned) if ctx.analysis.report.mixed_precision else [],
        report_uri=report.uri if report else None,
        input_contract=artifact_input_contract(ctx.spec.model.input, ctx.quantized.input) if ctx.quantized else None,
        warnings=[
            w if len(w) <= _WARNING_CHARS else w[: _WARNING_CHARS - 1] + "…" for w in ctx.warnings[:RESULT_WARNINGS]
        ],
    )


def _rung(ctx: RunContext) -> str | None:
    gate = ctx.analysis.report.gate
    return gate.rung if gate is not None else None


def worker_result(ctx: RunContext) -> WorkerResult:
    return WorkerResult.for_exit(ctx.exit_code, ctx.message, results(ctx))


def summary_line(ctx: RunContext) -> str:
    if ctx.quantized is None or ctx.baseline is None:
        return "done"
    parts = [f"{ctx.quantized.format}: {ctx.quantized.size_bytes:,} bytes"]
    ratio = compression_ratio(ctx)
    if ratio:
        parts.append(f"{ratio:.2f}x smaller")
    b, q = ctx.baseline.evaluation, ctx.quantized.evaluation
    if b and q and b.accuracy(ctx.metric) is not None and q.accuracy(ctx.metric) is not None:
        parts.append(f"{ctx.metric.value} {b.accuracy(ctx.metric):.4f} -> {q.accuracy(ctx.metric):.4f}")
    elif ctx.agreement is not None:
        parts.append(f"accuracy n/a (no labels), agreement with FP32 {ctx.agreement:.4f}")
    if q and q.latency_ms is not None:
        parts.append(f"{q.latency_ms:.3f} ms/image")
    rung = _rung(ctx)
    if ctx.spec.acceptance.on_failure is api.OnFailure.REMEDY and rung is not None:
        parts.append(
            f"remedy rung {rung}" + (" passed" if ctx.verdict is not None and ctx.verdict.passed else " (best found)")
        )
    if ctx.degraded:
        parts.append("DEGRADED")
    return ", ".join(parts)
