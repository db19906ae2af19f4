"""Building report.json (``report/schema.py``'s ``Report``) from a run's ``RunContext``, and writing it.

The one place the run's state becomes the report: measurements, the gate, datasets and findings, stages, the
analysis and target sections, the environment. report.html is rendered from the written JSON (``report/html.py``).
Every run writes it, also one that fails at its first stage, so numpy and what only later stages' sections need
load inside the functions that build those sections.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import edgequant
from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import REASONS, ExitCode
from edgequant.api.targets import TARGETS, target_notes
from edgequant.report.schema import (
    Comparison,
    DatasetReport,
    Environment,
    GateReport,
    JobRef,
    ModelReport,
    Outcome,
    Report,
    SourceModelInfo,
    StageReport,
    TargetChoiceReport,
    TargetReport,
    TensorInfo,
    UploadInfo,
)
from edgequant.util.cpu import detect as detect_cpu
from edgequant.worker.context import ModelRecord, RunContext

if TYPE_CHECKING:
    from edgequant.backends.base import TensorContract


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
    import numpy as np

    from edgequant.backends.base import to_input_contract
    from edgequant.data.preprocess import describe, float_range

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


def compression_ratio(ctx: RunContext) -> float | None:
    """Baseline size / quantized size."""
    if ctx.baseline is None or ctx.quantized is None or ctx.quantized.size_bytes == 0:
        return None
    return ctx.baseline.size_bytes / ctx.quantized.size_bytes


def accuracy_drop(ctx: RunContext) -> float | None:
    """Baseline minus quantized accuracy in the spec's metric (None when either was not measured)."""
    if ctx.baseline is None or ctx.quantized is None or not ctx.baseline.evaluation or not ctx.quantized.evaluation:
        return None
    b, q = ctx.baseline.evaluation.accuracy(ctx.metric), ctx.quantized.evaluation.accuracy(ctx.metric)
    return None if b is None or q is None else b - q


def output_sqnr(ctx: RunContext) -> float | None:
    """The quantized outputs' SQNR against FP32's, dB."""
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


def _gate(ctx: RunContext) -> GateReport | None:
    """The one gate verdict, shown as both ``gate`` and ``analysis.gate``: the select stage's (it judged the
    published candidate and the ladder), else one built from the gate stage's own verdict (a run without select)."""
    if ctx.analysis.report.gate is not None:
        return ctx.analysis.report.gate
    if ctx.verdict is None:
        return None
    from edgequant.analysis.gate import gate_report

    return gate_report(
        ctx.verdict,
        ctx.spec.acceptance,
        accuracy_budget_applied=accuracy_drop(ctx) is not None,
        degraded=ctx.degraded,
    )


def build_report(ctx: RunContext) -> Report:
    """report.json of the run as it stands: every section the stages reached."""
    spec = ctx.spec
    comparison = None
    if ctx.baseline is not None and ctx.quantized is not None:
        b, q = ctx.baseline.evaluation, ctx.quantized.evaluation
        speedup = b.latency_ms / q.latency_ms if b and q and b.latency_ms and q.latency_ms else None
        comparison = Comparison(
            metric=ctx.metric,
            compression_ratio=compression_ratio(ctx),
            accuracy_drop=accuracy_drop(ctx),
            agreement=ctx.agreement,
            sqnr_db=output_sqnr(ctx),
            latency_speedup=speedup,
        )
    gate = _gate(ctx)
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
    """report.json at ``path``, built from the run as it stands (also after a failure)."""
    report = build_report(ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.model_dump(mode="json", by_alias=True), indent=2) + "\n")
    return path
