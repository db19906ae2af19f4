"""The worker's stages, run in order on one ``RunContext``.

fetch -> validate-data -> baseline -> quantize -> evaluate -> gate -> upload,
then the report is always written (also after a failure, so the findings
reach the user) and the run ends in a ``WorkerResult``.

Each stage is a plain function of the context; ``STAGES`` is the table the
pipeline walks. Later analysis (sensitivity, mixed precision, the degrade
ladder, diagnostics) plugs in by inserting ``Stage`` entries, e.g.
``insert_after(STAGES, "quantize", Stage("sensitivity", ..., run_sensitivity))``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.analysis import diagnostics
from edgequant.analysis import stages as analysis_stages
from edgequant.analysis.gate import chance_check, check_acceptance
from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import backend_options
from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult
from edgequant.api.validation import spec_warnings
from edgequant.backends import registry
from edgequant.backends.base import BaselineExport, Predictor, QuantizedArtifact, QuantizeRequest
from edgequant.data.datasets import index_dataset
from edgequant.data.loader import prepare_set
from edgequant.data.validation import Finding, Severity, check_calibration, has_errors
from edgequant.report.html import render_html
from edgequant.util.errors import AcceptanceError, DataValidationError, EdgequantError, InvalidInputError
from edgequant.worker import report as report_mod
from edgequant.worker.context import ModelRecord, RunContext, StageRecord
from edgequant.worker.evaluate import EvaluationResult, agreement, evaluate


@dataclass(frozen=True)
class Stage:
    name: str
    """Stable kebab-case id, shown in logs, progress and the report."""
    title: str
    run: Callable[[RunContext], None]


# --------------------------------------------------------------------------- helpers


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _roles(spec: api.QuantizationJobSpec) -> dict[str, api.Dataset]:
    """The datasets this method reads, by role."""
    roles: dict[str, api.Dataset] = {}
    if spec.calibration is not None and (spec.method.needs_calibration or spec.method.needs_training):
        roles["calibration"] = spec.calibration.dataset
    if spec.training is not None and (spec.method.needs_training or spec.acceptance.on_failure is api.OnFailure.REMEDY):
        roles["training"] = spec.training.dataset
    if spec.evaluation is not None:
        roles["evaluation"] = spec.evaluation.dataset
    return roles


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


#: FP32's outputs on the evaluation set, kept (memory-mapped) so every candidate's SQNR against them needs no FP32 rerun.
FP32_OUTPUTS = "fp32-outputs.npy"


def _evaluate(
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


def _describe_eval(record: ModelRecord) -> str:
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


# --------------------------------------------------------------------------- stages


def fetch(ctx: RunContext) -> None:
    """Download the model and every dataset the method reads; list the datasets."""
    spec = ctx.spec
    ctx.log(f"model {spec.model.uri}")
    ctx.model_path = ctx.stores.download(
        spec.model.uri, ctx.workdir / "model", sha256=spec.model.sha256, sha256_field="spec.model.sha256"
    )
    ctx.source_size_bytes = _size(ctx.model_path)
    local: dict[str, Path] = {}
    for role, dataset in _roles(spec).items():
        if dataset.uri not in local:
            ctx.log(f"{role} data {dataset.uri}")
            local[dataset.uri] = ctx.stores.download(dataset.uri, ctx.workdir / "data" / role)
        ctx.indexes[role] = index = index_dataset(
            local[dataset.uri], layout=dataset.layout, uri=dataset.uri, labels=dataset.labels
        )
        ctx.log(
            f"{role}: {len(index.samples)} samples "
            + (f"in {len(index.classes)} classes" if index.labeled else "without labels")
        )
    # settings the method ignores or that look wrong (`edgequant validate` prints the same): notes, never failures
    ctx.notes.extend(f"spec warning: {w}" for w in spec_warnings(spec))


def _decode_progress(ctx: RunContext, role: str) -> Callable[[int, int], None]:
    """Progress callback for decoding one data set (a closure per role: the loop variable would be late-bound)."""
    return lambda done, total: ctx.progress.advance(task=f"decode {role}", done=done, total=total)


def _check_labels(ctx: RunContext) -> None:
    """What unlabeled data cannot do: train QAT, or enforce an accuracy budget the user set."""
    spec = ctx.spec
    training = ctx.indexes.get("training")
    if training is not None and not training.labeled:
        raise InvalidInputError(
            f"training.dataset {training.uri} has no labels and QAT fine-tunes on labels: "
            "use class folders (<class>/<image>) or an npz with y"
        )
    evaluation = ctx.indexes.get("evaluation")
    if evaluation is None or evaluation.labeled:
        return
    drop = spec.acceptance.max_accuracy_drop
    if drop != api.DEFAULT_MAX_ACCURACY_DROP:
        raise InvalidInputError(
            f"spec.acceptance.maxAccuracyDrop {drop:g} needs labeled evaluation data and evaluation.dataset {evaluation.uri} "
            "has no labels (no class folders / no y): remove maxAccuracyDrop and budget fidelity with "
            "acceptance.minAgreement (e.g. 0.99) or acceptance.minSqnrDb, or give the data labels"
        )


def validate_data(ctx: RunContext) -> None:
    """Sample, decode and check every dataset; calibration rules on the calibration set."""
    spec = ctx.spec
    _check_labels(ctx)
    seed = spec.calibration.seed if spec.calibration else 0
    counts = {
        "calibration": spec.calibration.samples if spec.calibration else None,
        "evaluation": spec.evaluation.samples if spec.evaluation else None,
        "training": spec.training.max_samples if spec.training else None,
    }
    for role, index in ctx.indexes.items():
        prepared = prepare_set(
            index,
            name=role,
            contract=spec.model.input,
            samples=counts[role],
            seed=seed,
            progress=_decode_progress(ctx, role),
        )
        ctx.sets[role] = prepared
        ctx.findings.extend(prepared.findings)
        ctx.log(f"{role}: {len(prepared)} usable of {prepared.requested} requested")
    if "calibration" in ctx.sets and spec.calibration is not None:
        evaluation = ctx.indexes.get("evaluation")
        ctx.findings.extend(
            check_calibration(
                ctx.sets["calibration"].labels,
                calibration=spec.calibration,
                class_names=ctx.indexes["calibration"].classes,
                evaluation_labels=set(evaluation.labels.tolist())
                if evaluation is not None and evaluation.labeled
                else None,
                labeled=ctx.sets["calibration"].labeled,
            )
        )
    for finding in ctx.findings:
        ctx.log(f"{finding.severity.value}: {finding.dataset}: {finding.message}")
        if finding.severity is Severity.WARNING:
            ctx.warnings.append(f"{finding.dataset}: {finding.message}")
    if has_errors(ctx.findings):
        errors = [f for f in ctx.findings if f.severity is Severity.ERROR]
        raise DataValidationError("; ".join(f"{f.dataset}: {f.message}" for f in errors))


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
            path=exported.path, format=exported.format, size_bytes=_size(exported.path), input=exported.input
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
    record.evaluation = _evaluate(ctx, predictor, label="FP32", baseline=True, rescored=True)
    ctx.baseline = record
    ctx.log(_describe_eval(record))
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
    if analysis_stages.scaling_mismatch(ctx) is not None:
        # the other input scaling scores far better on the same labels: the inputs are wrong, not the labels
        ctx.log(
            "FP32 scores no better than chance with the configured input scaling; the diagnostics report the preprocessing mismatch"
        )
        return
    finding = Finding(
        severity=Severity.WARNING,
        code="labels-do-not-match-model",
        dataset="evaluation",
        message=check.message(),
        count=check.samples,
    )
    ctx.findings.append(finding)
    ctx.warnings.append(f"evaluation: {finding.message}")
    ctx.log(f"warning: evaluation: {finding.message}")


def quantize(ctx: RunContext) -> None:
    assert ctx.backend is not None
    method = ctx.method or ctx.spec.method
    artifact = ctx.backend.quantize(quantize_request(ctx, method=method))
    ctx.artifact = artifact
    ctx.method = artifact.method
    ctx.notes.extend(artifact.notes)
    ctx.log(f"{artifact.path.name}: {_size(artifact.path):,} bytes, input {artifact.input.dtype}")


def measure_artifact(
    ctx: RunContext, artifact: QuantizedArtifact, *, label: str = "quantized", rescored: bool = False
) -> ModelRecord:
    assert ctx.backend is not None
    predictor = ctx.backend.load(artifact.path, options=backend_options(ctx.spec))
    record = ModelRecord(
        path=artifact.path, format=artifact.method.value, size_bytes=_size(artifact.path), input=predictor.input
    )
    record.evaluation = _evaluate(ctx, predictor, label=label, rescored=rescored)
    return record


def evaluate_quantized(ctx: RunContext) -> None:
    assert ctx.backend is not None and ctx.artifact is not None
    record = measure_artifact(ctx, ctx.artifact, rescored=True)
    ctx.quantized = record
    if ctx.baseline is not None and ctx.baseline.evaluation is not None and record.evaluation is not None:
        ctx.agreement = agreement(ctx.baseline.evaluation, record.evaluation)
    ctx.log(_describe_eval(record))


def gate(ctx: RunContext) -> None:
    """The acceptance budget: fail, or publish flagged degraded when onFailure is degrade."""
    assert ctx.baseline is not None and ctx.quantized is not None
    if ctx.analysis.failure:  # the select stage walked mixed precision / the ladder and nothing passed
        raise AcceptanceError(ctx.analysis.failure)
    metric = ctx.metric
    base_eval, quant_eval = ctx.baseline.evaluation, ctx.quantized.evaluation
    ctx.verdict = ctx.verdict or check_acceptance(
        acceptance=ctx.spec.acceptance,
        baseline_accuracy=base_eval.accuracy(metric) if base_eval else None,
        quantized_accuracy=quant_eval.accuracy(metric) if quant_eval else None,
        baseline_size=ctx.baseline.size_bytes,
        quantized_size=ctx.quantized.size_bytes,
        agreement=ctx.agreement,
        sqnr_db=quant_eval.sqnr_db if quant_eval else None,
    )
    if ctx.spec.evaluation is None:
        ctx.warnings.append(
            "no evaluation.dataset: accuracy was not measured and acceptance.maxAccuracyDrop was not enforced"
        )
    elif "evaluation" in ctx.sets and not ctx.sets["evaluation"].labeled:
        a = ctx.spec.acceptance
        judged = [
            name
            for name, value in (("acceptance.minAgreement", a.min_agreement), ("acceptance.minSqnrDb", a.min_sqnr_db))
            if value is not None
        ]
        then = (
            f"fidelity was judged by {' and '.join(judged)}"
            if judged
            else "set acceptance.minAgreement to budget fidelity against FP32"
        )
        ctx.notes.append(
            f"accuracy n/a: the evaluation data has no labels, so acceptance.maxAccuracyDrop was not applied; {then}"
        )
    if ctx.verdict.passed:
        ctx.log(
            f"within budget: ratio {ctx.verdict.compression_ratio:.2f}x"
            + (f", accuracy drop {ctx.verdict.accuracy_drop:+.4f}" if ctx.verdict.accuracy_drop is not None else "")
            + (f", agreement {ctx.verdict.agreement:.4f}" if ctx.verdict.agreement is not None else "")
        )
        return
    reasons = "; ".join(ctx.verdict.reasons)
    if ctx.spec.acceptance.on_failure in (api.OnFailure.DEGRADE, api.OnFailure.REMEDY):
        ctx.degraded = True
        ctx.warnings.append(f"published degraded: {reasons}")
        ctx.log(f"over budget, publishing degraded: {reasons}")
        return
    raise AcceptanceError(f"the quantized model missed the acceptance budget: {reasons}")


def upload_artifact(ctx: RunContext) -> None:
    assert ctx.artifact is not None
    for path in [ctx.artifact.path, *ctx.artifact.extra_files]:
        uploaded = ctx.stores.upload(path, ctx.output_uri(path.name), content_type="application/octet-stream")
        ctx.uploads["artifact" if path == ctx.artifact.path else path.name] = uploaded
        ctx.log(f"uploaded {uploaded.uri} (sha256 {uploaded.sha256[:12]}…)")


def analysis_hooks(ctx: RunContext) -> analysis_stages.WorkerHooks:
    """The worker helpers the analysis stages use (edgequant.analysis.stages)."""

    def score(path: Path, label: str) -> Any:
        assert ctx.backend is not None
        return _evaluate(ctx, ctx.backend.load(path, options=backend_options(ctx.spec)), label=label, latency_runs=0)

    def accuracy(path: Path, label: str) -> float | None:
        return score(path, label).accuracy(ctx.metric)

    def agreement_of(path: Path, label: str) -> float | None:
        return (
            agreement(ctx.baseline.evaluation, score(path, label)) if ctx.baseline and ctx.baseline.evaluation else None
        )

    def request_with(method: api.Method, spec: api.QuantizationJobSpec) -> QuantizeRequest:
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
                progress=lambda done, total: ctx.progress.advance(task="decode calibration", done=done, total=total),
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

    return analysis_stages.WorkerHooks(
        request=lambda method: quantize_request(ctx, method=method),
        request_with=request_with,
        measure=lambda artifact, label: measure_artifact(ctx, artifact, label=label),
        accuracy=accuracy,
        agreement=agreement,
        agreement_of=agreement_of,
    )


STAGES: tuple[Stage, ...] = (
    Stage("fetch", "download the model and data", fetch),
    Stage("validate-data", "decode, sample and check the datasets", validate_data),
    Stage("baseline", "measure the FP32 model", evaluate_baseline),
    Stage("quantize", "quantize", quantize),
    Stage("evaluate", "measure the quantized model", evaluate_quantized),
    Stage(
        "sensitivity", "rank layers by sensitivity", lambda ctx: analysis_stages.sensitivity(ctx, analysis_hooks(ctx))
    ),
    Stage(
        "select", "mixed precision and the degrade ladder", lambda ctx: analysis_stages.select(ctx, analysis_hooks(ctx))
    ),
    Stage(
        "diagnose", "compare FP32 and quantized outputs", lambda ctx: analysis_stages.diagnose(ctx, analysis_hooks(ctx))
    ),
    Stage("target", "check the artifact against spec.target", analysis_stages.target_check),
    Stage("gate", "check the acceptance budget", gate),
    Stage("upload", "upload the artifact", upload_artifact),
)


def insert_after(stages: Sequence[Stage], name: str, *new: Stage) -> tuple[Stage, ...]:
    """A copy of ``stages`` with ``new`` after the stage called ``name``."""
    names = [s.name for s in stages]
    if name not in names:
        raise KeyError(f"no stage {name!r} in {names}")
    at = names.index(name) + 1
    return (*stages[:at], *new, *stages[at:])


# --------------------------------------------------------------------------- the run


def _publish_report(ctx: RunContext) -> None:
    """Write report.json below output.uri whatever the outcome, so findings reach the user after a failure too."""
    path = report_mod.write_report(ctx, ctx.workdir / report_mod.REPORT_NAME)
    html = path.with_name("report.html")
    html.write_text(render_html(json.loads(path.read_text())), encoding="utf-8")
    try:
        ctx.uploads["report"] = ctx.stores.upload(
            path, ctx.output_uri(report_mod.REPORT_NAME), content_type="application/json"
        )
        ctx.uploads["report-html"] = ctx.stores.upload(html, ctx.output_uri(html.name), content_type="text/html")
    except EdgequantError as exc:
        ctx.progress.log(f"report.json not uploaded: {exc}")
        if ctx.exit_code is ExitCode.SUCCESS:
            ctx.exit_code, ctx.message = exc.exit_code, f"report.json not uploaded: {exc}"


def run(ctx: RunContext, *, stages: Sequence[Stage] = STAGES) -> WorkerResult:
    """Walk ``stages``; stop at the first failure; always publish the report; return the compact result."""
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    reached = None
    for index, stage in enumerate(stages, start=1):
        ctx.progress.stage_started(index=index, total=len(stages), name=stage.name, title=stage.title)
        reached = f"{index}/{len(stages)} {stage.name}"[:64]
        start = time.monotonic()
        ok = False
        try:
            stage.run(ctx)
            ok = True
        except EdgequantError as exc:
            ctx.exit_code, ctx.message = exc.exit_code, str(exc)
        except Exception as exc:  # an accident: keep the traceback in the log, the summary in the result
            ctx.progress.log(traceback.format_exc())
            ctx.exit_code = ExitCode.INTERNAL_ERROR
            ctx.message = f"internal error in stage {stage.name}: {type(exc).__name__}: {exc}"
        seconds = time.monotonic() - start
        ctx.stages.append(StageRecord(name=stage.name, seconds=seconds, ok=ok))
        ctx.progress.stage_finished(name=stage.name, seconds=seconds, ok=ok)
        if not ok:
            break
    if ctx.exit_code is ExitCode.SUCCESS:
        ctx.message = report_mod.summary_line(ctx)
    _publish_report(ctx)
    return report_mod.worker_result(ctx).model_copy(update={"stage": reached})
