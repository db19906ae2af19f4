"""report.json (the full record of a run) and the compact WorkerResult, both built from the RunContext here only.

The schema is documented in docs/report.md. Later analyses add optional
sections to ``Report``; consumers must ignore keys they do not know.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

import edgequant
from edgequant.analysis.schema import AnalysisReport
from edgequant.analysis.schema import Finding as AnalysisFinding
from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import REASONS, ExitCode
from edgequant.api.result import WorkerResult
from edgequant.api.targets import TARGETS, target_notes
from edgequant.backends.base import TensorContract, to_input_contract
from edgequant.data.preprocess import describe, float_range
from edgequant.data.validation import Finding
from edgequant.util.cpu import detect as detect_cpu
from edgequant.worker.context import ModelRecord, RunContext

REPORT_NAME = "report.json"
REPORT_KIND = "QuantizationReport"
#: Warnings carried in the termination message (the report has all of them).
RESULT_WARNINGS = 5
_WARNING_CHARS = 200


class ReportModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class JobRef(ReportModel):
    name: str | None = Field(None, description="QuantizationJob name, when the worker was given the whole object.")
    namespace: str | None = Field(None, description="Its namespace.")


class Outcome(ReportModel):
    succeeded: bool = Field(..., description="True when the artifact and this report were published (exit code 0).")
    exit_code: int = Field(..., description="Worker exit code (edgequant.api.exitcodes).")
    reason: str = Field(..., description="CamelCase reason of the exit code.")
    message: str = Field(..., description="Summary, or the error with its fix.")
    degraded: bool = Field(
        False, description="Published although the acceptance budget was missed (onFailure: degrade)."
    )


class SourceModelInfo(ReportModel):
    uri: str
    format: str | None
    size_bytes: int | None = Field(None, description="Size of the model as given (file, or folder total).")


class TensorInfo(ReportModel):
    dtype: str
    shape: list[int]
    scale: float | None = None
    zero_point: int | None = None


class ModelReport(ReportModel):
    format: str = Field(..., description="tflite-fp32 for the baseline, the method name for the artifact.")
    size_bytes: int
    input: TensorInfo
    evaluated_samples: int = 0
    top1: float | None = None
    top5: float | None = None
    accuracy: float | None = Field(None, description="The spec's metric (evaluation.metric).")
    latency_ms_median: float | None = Field(None, description="Median single-image latency on the worker's CPU.")
    latency_ms_p90: float | None = None
    latency_runs: int = 0
    fed_range: list[float] | None = Field(None, description="[min, max] of the values actually fed to the model.")


class Comparison(ReportModel):
    metric: api.Metric
    compression_ratio: float | None = Field(None, description="Baseline size / quantized size.")
    accuracy_drop: float | None = Field(None, description="Baseline accuracy minus quantized accuracy.")
    agreement: float | None = Field(
        None, description="Share of evaluation samples where both models predict the same class."
    )
    sqnr_db: float | None = Field(
        None, description="SQNR of the quantized outputs against FP32's over the evaluation set, dB."
    )
    latency_speedup: float | None = Field(None, description="Baseline median latency / quantized median latency.")


class GateReport(ReportModel):
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    max_accuracy_drop: float
    min_compression_ratio: float
    on_failure: api.OnFailure
    accuracy_budget_applied: bool = Field(
        True,
        description="False when accuracy was not measured (unlabeled or no evaluation data): maxAccuracyDrop was not applied.",
    )
    min_agreement: float | None = Field(None, description="acceptance.minAgreement.")
    min_sqnr_db: float | None = Field(None, description="acceptance.minSqnrDb.")
    agreement: float | None = Field(None, description="The judged model's top-1 agreement with FP32.")
    sqnr_db: float | None = Field(None, description="The judged model's output SQNR against FP32, dB.")


class DatasetReport(ReportModel):
    role: str = Field(..., description="calibration, evaluation or training.")
    uri: str
    layout: api.DatasetLayout
    available: int = Field(..., description="Samples in the dataset.")
    requested: int = Field(..., description="Samples the spec asked for.")
    used: int = Field(..., description="Samples decoded and used.")
    labeled: bool = Field(
        True, description="False: the data has no labels (accuracy n/a; agreement and SQNR with FP32 still measured)."
    )
    class_counts: dict[str, int] = Field(default_factory=dict, description="Used samples per class name.")


class UploadInfo(ReportModel):
    uri: str
    sha256: str
    size_bytes: int


class StageReport(ReportModel):
    name: str
    seconds: float
    ok: bool


class Environment(ReportModel):
    edgequant: str
    python: str
    platform: str
    cpu_count: int | None
    frameworks: dict[str, str] = Field(default_factory=dict)


class TargetChoiceReport(ReportModel):
    field: str = Field(..., description="Spec path the target filled in.")
    value: str = Field(..., description="The value it chose.")
    reason: str = Field(..., description="The rule it follows, with its source (docs/targets.md).")


class TargetReport(ReportModel):
    name: api.Target = Field(..., description="spec.target.")
    title: str = Field(..., description="The device in words.")
    runtime: str = Field(..., description="What runs the model on the device.")
    choices: list[TargetChoiceReport] = Field(
        default_factory=list, description="Every value the target filled in (what the spec left out), and why."
    )
    findings: list[AnalysisFinding] = Field(
        default_factory=list,
        description="The target's compatibility checks (coral-edgetpu: ops against the Edge TPU's supported operations), fired or quiet, with fixes.",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="What the figures mean for the target: latency is measured on the worker's CPU, not the target; the Edge TPU compiler is not run.",
    )


class Report(ReportModel):
    api_version: str = Field(api.API_VERSION)
    kind: str = Field(REPORT_KIND)
    created_at: str
    job: JobRef
    outcome: Outcome
    method: api.Method = Field(..., description="The method the spec asked for.")
    published_method: api.Method | None = Field(None, description="The method that produced the artifact.")
    backend: str | None = None
    model: SourceModelInfo
    input_contract: api.ArtifactInputContract | None = Field(None, description="What the artifact expects as input.")
    baseline: ModelReport | None = None
    quantized: ModelReport | None = None
    comparison: Comparison | None = None
    gate: GateReport | None = None
    artifact: UploadInfo | None = None
    side_files: list[UploadInfo] = Field(default_factory=list)
    datasets: list[DatasetReport] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    stages: list[StageReport] = Field(default_factory=list)
    analysis: AnalysisReport | None = Field(
        None, description="Sensitivity, mixed precision, the gate's ladder and diagnostics (docs/analysis.md)."
    )
    target: TargetReport | None = Field(
        None, description="spec.target: what it chose and why, its checks (docs/targets.md)."
    )
    environment: Environment
    spec: dict[str, Any] = Field(..., description="The spec as run (it holds Secret names, never keys).")


# --------------------------------------------------------------------------- pieces


def _tensor(t: TensorContract) -> TensorInfo:
    return TensorInfo(dtype=t.dtype, shape=list(t.shape), scale=t.scale, zero_point=t.zero_point)


def _model(record: ModelRecord, metric: api.Metric) -> ModelReport:
    e = record.evaluation
    return ModelReport(
        format=record.format,
        size_bytes=record.size_bytes,
        input=_tensor(record.input),
        evaluated_samples=e.samples if e else 0,
        top1=e.top1 if e else None,
        top5=e.top5 if e else None,
        accuracy=e.accuracy(metric) if e else None,
        latency_ms_median=e.latency_ms if e else None,
        latency_ms_p90=e.latency_p90_ms if e else None,
        latency_runs=e.latency_runs if e else 0,
        fed_range=list(e.fed_range) if e and e.fed_range else None,
    )


def artifact_input_contract(contract: api.InputContract, tensor: TensorContract) -> api.ArtifactInputContract:
    """The artifact's input in user terms: dtype, range, quantization, and the preprocessing that feeds it."""
    low, high = float_range(contract)
    text = describe(contract)
    if tensor.scale is not None and tensor.zero_point is not None:
        ends = to_input_contract(np.array([low, high], dtype=np.float32), tensor)
        value_range = [float(ends.min()), float(ends.max())]
        scaling = contract.scaling
        pixels = np.arange(256, dtype=np.float32)
        identity = scaling.mean is None and np.array_equal(
            to_input_contract(pixels * np.float32(scaling.scale) + np.float32(scaling.offset), tensor), pixels
        )
        text += f"; then {tensor.dtype} = round(x / {tensor.scale:.6g}) + {tensor.zero_point}"
        if identity:
            text += f" — i.e. feed the {tensor.dtype} pixels 0-255 as they are, never float/255"
    else:
        value_range = [float(low), float(high)]
        text += f"; feed {tensor.dtype}"
    return api.ArtifactInputContract(
        dtype=tensor.dtype,
        shape=list(tensor.shape),
        layout=contract.layout,
        value_range=value_range,
        quant_scale=tensor.scale,
        quant_zero_point=tensor.zero_point,
        preprocessing=text,
    )


def _ratio(ctx: RunContext) -> float | None:
    if ctx.baseline is None or ctx.quantized is None or ctx.quantized.size_bytes == 0:
        return None
    return ctx.baseline.size_bytes / ctx.quantized.size_bytes


def _drop(ctx: RunContext) -> float | None:
    if ctx.baseline is None or ctx.quantized is None or not ctx.baseline.evaluation or not ctx.quantized.evaluation:
        return None
    b, q = ctx.baseline.evaluation.accuracy(ctx.metric), ctx.quantized.evaluation.accuracy(ctx.metric)
    return None if b is None or q is None else b - q


def _sqnr(ctx: RunContext) -> float | None:
    e = ctx.quantized.evaluation if ctx.quantized is not None else None
    return e.sqnr_db if e is not None else None


def _frameworks() -> dict[str, str]:
    found = {}
    for name in (
        "tensorflow",
        "keras",
        "tf_keras",
        "tensorflow_model_optimization",
        "ai_edge_litert",
        "onnxruntime",
        "torch",
        "tensorrt",
    ):
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module else None
        if version:
            found[name] = str(version)
    return found


def _upload(ctx: RunContext, key: str) -> UploadInfo | None:
    up = ctx.uploads.get(key)
    return UploadInfo(uri=up.uri, sha256=up.sha256, size_bytes=up.size_bytes) if up else None


def cpu_description() -> str:
    return "worker CPU " + detect_cpu().describe()


def _target(ctx: RunContext) -> TargetReport | None:
    target = ctx.spec.target
    if target is None:
        return None
    profile = TARGETS[target.value]
    notes = target_notes(ctx.spec)
    notes[0] += f" ({cpu_description()})"
    return TargetReport(
        name=target,
        title=profile.title,
        runtime=profile.runtime,
        choices=[TargetChoiceReport(field=c.field, value=c.value, reason=c.reason) for c in ctx.target_choices],
        findings=list(ctx.target_findings),
        notes=notes,
    )


# --------------------------------------------------------------------------- builders


def build_report(ctx: RunContext) -> Report:
    spec = ctx.spec
    comparison = None
    if ctx.baseline is not None and ctx.quantized is not None:
        b, q = ctx.baseline.evaluation, ctx.quantized.evaluation
        speedup = b.latency_ms / q.latency_ms if b and q and b.latency_ms and q.latency_ms else None
        comparison = Comparison(
            metric=ctx.metric,
            compression_ratio=_ratio(ctx),
            accuracy_drop=_drop(ctx),
            agreement=ctx.agreement,
            sqnr_db=_sqnr(ctx),
            latency_speedup=speedup,
        )
    gate = None
    if ctx.verdict is not None:
        a = spec.acceptance
        gate = GateReport(
            passed=ctx.verdict.passed,
            reasons=ctx.verdict.reasons,
            max_accuracy_drop=a.max_accuracy_drop,
            min_compression_ratio=a.min_compression_ratio,
            on_failure=a.on_failure,
            accuracy_budget_applied=_drop(ctx) is not None,
            min_agreement=a.min_agreement,
            min_sqnr_db=a.min_sqnr_db,
            agreement=ctx.agreement,
            sqnr_db=_sqnr(ctx),
        )
    fmt = spec.model.resolved_format
    return Report(
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        job=JobRef(name=ctx.job_name, namespace=ctx.job_namespace),
        outcome=Outcome(
            succeeded=ctx.exit_code is ExitCode.SUCCESS,
            exit_code=int(ctx.exit_code),
            reason=REASONS[ctx.exit_code],
            message=ctx.message,
            degraded=ctx.degraded,
        ),
        method=spec.method,
        published_method=ctx.method if "artifact" in ctx.uploads else None,
        backend=getattr(ctx.backend, "name", None),
        model=SourceModelInfo(uri=spec.model.uri, format=fmt.value if fmt else None, size_bytes=ctx.source_size_bytes),
        input_contract=artifact_input_contract(spec.model.input, ctx.quantized.input) if ctx.quantized else None,
        baseline=_model(ctx.baseline, ctx.metric) if ctx.baseline else None,
        quantized=_model(ctx.quantized, ctx.metric) if ctx.quantized else None,
        comparison=comparison,
        gate=gate,
        artifact=_upload(ctx, "artifact"),
        side_files=[
            u
            for k in ctx.uploads
            if k not in ("artifact", "report", "report-html")
            if (u := _upload(ctx, k)) is not None
        ],
        datasets=[
            DatasetReport(
                role=role,
                uri=s.uri,
                layout=ctx.indexes[role].layout,
                available=s.available,
                requested=s.requested,
                used=len(s),
                labeled=s.labeled,
                class_counts=s.class_counts(),
            )
            for role, s in ctx.sets.items()
        ],
        findings=ctx.findings,
        warnings=ctx.warnings,
        notes=ctx.notes,
        stages=[StageReport(name=s.name, seconds=round(s.seconds, 3), ok=s.ok) for s in ctx.stages],
        analysis=ctx.analysis.sections(),
        target=_target(ctx),
        environment=Environment(
            edgequant=edgequant.__version__,
            python=platform.python_version(),
            platform=platform.platform(),
            cpu_count=os.cpu_count(),
            frameworks=_frameworks(),
        ),
        spec=spec.to_wire(),
    )


def write_report(ctx: RunContext, path: Path) -> Path:
    report = build_report(ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.model_dump(mode="json", by_alias=True), indent=2) + "\n")
    return path


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
        compression_ratio=_ratio(ctx),
        accuracy_drop=_drop(ctx),
        agreement=ctx.agreement,
        sqnr_db=_sqnr(ctx),
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
    ratio = _ratio(ctx)
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
