"""Stages ``sensitivity``, ``select`` and ``diagnose``: the layer analysis around the quantized artifact.

sensitivity ranks layers (fast: one probe run; exhaustive: one model per layer); select walks mixed precision and
the degrade / remedy ladder and leaves the gate's verdict on the chosen artifact; diagnose compares FP32 and the
chosen artifact's outputs and names fixes. The math is framework-free and lives in ``edgequant.analysis``
(sensitivity, selection, gate, remedy, diagnostics); the models are built and scored here, through the backend and
the one evaluator (``worker/stages/measure.py``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from edgequant.analysis import diagnostics as dg
from edgequant.analysis.layer_tools import LayerTool, layer_tool_for
from edgequant.analysis.remedy import RemedyPlan, RemedyStep, plan_remedies
from edgequant.analysis.selection import Candidate, select_artifact
from edgequant.analysis.sensitivity import combine, exhaustive_sensitivity, fast_sensitivity
from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import backend_options
from edgequant.api.exitcodes import ExitCode
from edgequant.backends.base import (
    Float16Export,
    Predictor,
    QuantizedArtifact,
    describe_contract,
    to_input_contract,
)
from edgequant.report.schema import Finding, SensitivityReport
from edgequant.util.memory import memory_budget
from edgequant.worker.context import ModelRecord, RunContext
from edgequant.worker.evaluate import agreement
from edgequant.worker.stages.measure import agreement_with_fp32, measure_artifact, score_model
from edgequant.worker.stages.quantize import quantize_request, remedy_request

#: Inputs the fast probe looks at.
PROBE_SAMPLES = 256
#: Calibration inputs both models run on for the diagnostics when there is no evaluation set (with one, the
#: diagnostics read the evaluations' kept outputs and run nothing).
DIAGNOSTIC_FALLBACK_SAMPLES = 128
#: Start of the failure message when the input scaling does not match the model.
PREPROCESSING_FAILURE = "preprocessing mismatch, nothing is published whatever acceptance.onFailure says"


# --------------------------------------------------------------------------- helpers


def _tool(ctx: RunContext) -> LayerTool | None:
    """The method's layer tool, made once per run (None, with the reason in ``tool_problem``, when there is none)."""
    state = ctx.analysis
    if not state.tool_tried:
        state.tool_tried = True
        method = ctx.spec.method
        if not method.ranks_layers:
            own = [m.value for m in api.Method if m.has_own_layer_tool]
            proxied = [m.value for m in api.Method if m.ranks_layers and not m.has_own_layer_tool]
            state.tool_problem = (
                f"{method.value} cannot quantize layers one at a time ({' and '.join(own)} can; "
                f"{' and '.join(proxied)} are ranked through ONNX Runtime)"
            )
        elif "calibration" not in ctx.sets:
            state.tool_problem = "no calibration data to quantize layers with"
        else:
            ctx.log("layer analysis: per-layer quantization from the quantize stage's calibration")
            try:
                state.tool = layer_tool_for(quantize_request(ctx, method=method), ctx.backend)
            except ValueError as exc:
                state.tool_problem = f"layer analysis unavailable: {exc}"
                return None
            ctx.log(f"layer analysis: {len(state.tool.layers)} quantizable layers")
            if not method.has_own_layer_tool:
                ctx.notes.append(
                    f"layers ranked with ONNX Runtime static INT8 on the CPU as a proxy for {method.value} (same ONNX node "
                    "names, calibration data and algorithm); TensorRT builds the engine with the chosen layers pinned"
                )
    return state.tool


def _inputs(ctx: RunContext, role: str, limit: int) -> tuple[np.ndarray, np.ndarray] | None:
    prepared = ctx.sets.get(role)
    if prepared is None:
        return None
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    n = 0
    for x, y in prepared.batches():
        xs.append(x[: limit - n])
        ys.append(np.asarray(y)[: limit - n])
        n += len(xs[-1])
        if n >= limit:
            break
    return (np.concatenate(xs), np.concatenate(ys)) if xs else None


def _fast(ctx: RunContext, tool: LayerTool) -> SensitivityReport:
    """One streamed probe run on the calibration images (else the evaluation ones), batches sized to the memory budget."""
    prepared = ctx.sets.get("calibration")
    if prepared is None:
        prepared = ctx.sets.get("evaluation")
    if prepared is None:
        raise ValueError("no data to probe the model with")
    budget = memory_budget(os.environ)
    ctx.log(f"sensitivity: memory budget {budget.bytes / 2**20:.0f} MiB from {budget.source}")
    start = time.perf_counter()
    probes = tool.probe((x for x, _y in prepared.batches()), max_samples=PROBE_SAMPLES, memory_budget=budget.bytes)
    batch = getattr(tool, "last_batch_size", 0)
    if batch:
        ctx.log(f"sensitivity: probed in batches of {batch}")
    return fast_sensitivity(
        probes=probes, threshold=ctx.spec.mixed_precision.sensitivity_threshold, seconds=time.perf_counter() - start
    )


def _baseline_accuracy(ctx: RunContext) -> float | None:
    e = ctx.baseline.evaluation if ctx.baseline is not None else None
    return e.accuracy(ctx.metric) if e is not None else None


def _unlabeled_evaluation(ctx: RunContext) -> bool:
    prepared = ctx.sets.get("evaluation")
    return prepared is not None and not prepared.labeled


def _candidate(
    ctx: RunContext, method: api.Method, pinned: tuple[str, ...], artifact: QuantizedArtifact, *, label: str
) -> Candidate:
    """Measure one built artifact; the candidate carries (artifact, record) as selection's opaque handle."""
    record = measure_artifact(ctx, artifact, label=label)
    e = record.evaluation
    return Candidate(
        method=method,
        pinned=pinned,
        accuracy=e.accuracy(ctx.metric) if e else None,
        size_bytes=record.size_bytes,
        artifact=(artifact, record),
        agreement=agreement_with_fp32(ctx, e),
        sqnr_db=e.sqnr_db if e else None,
    )


# --------------------------------------------------------------------------- stages


def sensitivity(ctx: RunContext) -> None:
    """Rank layers: fast always (one probe run); exhaustive too when asked, with their agreement."""
    mp = ctx.spec.mixed_precision
    if mp.sensitivity is api.SensitivityMode.OFF:
        ctx.log("sensitivity: off (mixedPrecision.sensitivity)")
        return
    if scaling_mismatch(ctx) is not None:
        ctx.notes.append("per-layer sensitivity skipped: the input scaling does not match the model (see diagnostics)")
        return
    tool = _tool(ctx)
    if tool is None:
        ctx.log(f"sensitivity skipped: {ctx.analysis.tool_problem}")
        if mp.mode is not api.MixedPrecisionMode.OFF or mp.sensitivity is api.SensitivityMode.EXHAUSTIVE:
            ctx.notes.append(f"per-layer sensitivity skipped: {ctx.analysis.tool_problem}")
        return
    fast = _fast(ctx, tool)
    report = fast
    if mp.sensitivity is api.SensitivityMode.EXHAUSTIVE:
        reference = _baseline_accuracy(ctx)

        def accuracy_of(layer: str) -> float | None:
            return score_model(ctx, tool.model_with_only(layer), f"only {layer}").accuracy(ctx.metric)

        def agreement_of(layer: str) -> float | None:
            if ctx.baseline is None or ctx.baseline.evaluation is None:
                return None
            return agreement(ctx.baseline.evaluation, score_model(ctx, tool.model_with_only(layer), f"only {layer}"))

        score: Callable[[str], float | None] = accuracy_of
        if reference is None and _unlabeled_evaluation(ctx):
            # No labels: a layer's cost is the share of samples whose FP32 class it flips (reference: FP32 agrees with itself).
            reference, score = 1.0, agreement_of
            ctx.notes.append(
                "exhaustive sensitivity scored each layer by top-1 agreement with FP32 (the evaluation data has no labels)"
            )
        if reference is None:
            ctx.warnings.append("exhaustive sensitivity needs evaluation.dataset; layers were ranked by the fast mode")
        else:
            known: float = reference

            def only(layer: str) -> float:
                acc = score(layer)
                return known if acc is None else acc

            exhaustive = exhaustive_sensitivity(
                layers=tool.layers,
                reference_accuracy=known,
                accuracy_with_only=only,
                threshold=mp.sensitivity_threshold,
                log=ctx.log,
            )
            report = combine(exhaustive=exhaustive, fast=fast)
            if report.agreement is not None:
                ctx.log(
                    f"sensitivity: fast vs exhaustive top-{report.agreement.k} overlap {report.agreement.top_k_overlap}"
                )
    ctx.analysis.report.sensitivity = report
    top = ", ".join(e.layer for e in report.layers[:3])
    ctx.log(f"sensitivity ({report.mode.value}): most sensitive {top}; flagged {report.flagged or 'none'}")


def select(ctx: RunContext) -> None:
    """Mixed precision and the degrade ladder: choose the artifact to publish and the gate's verdict on it."""
    spec = ctx.spec
    backend, baseline = ctx.backend, ctx.baseline
    assert backend is not None and baseline is not None and ctx.artifact is not None and ctx.quantized is not None
    mp = spec.mixed_precision
    manual = tuple(mp.pinned_layers) if mp.mode is api.MixedPrecisionMode.MANUAL else ()
    quant_eval = ctx.quantized.evaluation
    first = Candidate(
        method=ctx.artifact.method,
        pinned=manual,
        accuracy=quant_eval.accuracy(ctx.metric) if quant_eval is not None else None,
        size_bytes=ctx.quantized.size_bytes,
        artifact=(ctx.artifact, ctx.quantized),
        agreement=ctx.agreement,
        sqnr_db=quant_eval.sqnr_db if quant_eval is not None else None,
    )
    first_input = ctx.artifact.input
    mismatch = scaling_mismatch(ctx)
    if mismatch is not None:  # no artifact can be right: gate the first one as is, search nothing
        ctx.log("the input scaling does not match the model: mixed precision and the degrade ladder are skipped")
        spec = spec.model_copy(
            update={
                "acceptance": spec.acceptance.model_copy(update={"on_failure": api.OnFailure.FAIL}),
                "mixed_precision": mp.model_copy(
                    update={"mode": api.MixedPrecisionMode.OFF if mp.mode is api.MixedPrecisionMode.AUTO else mp.mode}
                ),
            }
        )
        mp = spec.mixed_precision
    needs_search = mp.mode is api.MixedPrecisionMode.AUTO or spec.acceptance.on_failure in (
        api.OnFailure.DEGRADE,
        api.OnFailure.REMEDY,
    )
    tool = _tool(ctx) if needs_search else None
    # The backend keeps layers in float for these methods (the quantize stage already applied manual pins).
    pinnable = spec.method.keeps_layers_float

    def build(rung: str, method: api.Method, pins: tuple[str, ...]) -> Candidate:
        converted = rung == "float16" and method is spec.method  # the backend's own float16 conversion
        if converted:
            assert isinstance(backend, Float16Export)
            artifact = backend.export_float16(quantize_request(ctx, method=method))
        elif method is first.method and pins == first.pinned:
            return first
        elif pins and tool is not None and method is spec.method and method.has_own_layer_tool:
            path = tool.model_keeping_float(pins)
            artifact = QuantizedArtifact(
                path=path, method=method, input=first_input, notes=[f"kept in float: {', '.join(pins)}"]
            )
        else:
            artifact = backend.quantize(
                dataclasses.replace(quantize_request(ctx, method=method), keep_float=list(pins))
            )
        label = f"{method.value}-float16" if converted else "+".join([method.value, *pins])[:60]
        return _candidate(ctx, method, pins, artifact, label=label)

    def ranking() -> Sequence[str]:
        report = ctx.analysis.report.sensitivity
        if report is None and tool is not None:
            report = _fast(ctx, tool)
            ctx.analysis.report.sensitivity = report
            ctx.notes.append("layers to keep in float were ranked by the fast sensitivity mode")
        return [e.layer for e in report.layers] if report is not None else []

    def build_step(step: RemedyStep) -> Candidate:
        """One remedy rung: quantize again with the step's spec (more samples, another algorithm, QAT)."""
        request = remedy_request(ctx, step.method, step.spec)
        artifact = backend.quantize(request)
        return _candidate(
            ctx, step.method, tuple(request.keep_float), artifact, label=f"{step.rung} {step.method.value}"
        )

    remedy: RemedyPlan | None = None
    if spec.acceptance.on_failure is api.OnFailure.REMEDY:
        index = ctx.indexes.get("calibration")
        used = ctx.sets.get("calibration")
        remedy = plan_remedies(
            spec,
            calibration_available=len(index.samples) if index is not None else None,
            calibration_used=len(used) if used is not None else None,
        )
        for why in remedy.skipped:
            ctx.log(f"remedy: skipped {why}")
    float16_method = spec.method.float16_rung
    if float16_method is spec.method and not isinstance(backend, Float16Export):
        float16_method = None
    selection = select_artifact(
        spec=spec,
        baseline_accuracy=_baseline_accuracy(ctx),
        baseline_size=baseline.size_bytes,
        build=build,
        ranking=ranking if (tool is not None or ctx.analysis.report.sensitivity is not None) else None,
        pinnable=pinnable,
        fallback_method=float16_method,
        log=ctx.log,
        remedy=remedy,
        build_step=build_step,
    )
    # The (artifact, record) pair this module's builds put in Candidate.artifact, which selection keeps opaque.
    chosen = selection.chosen.artifact
    assert isinstance(chosen, tuple)
    artifact, record = chosen
    assert isinstance(artifact, QuantizedArtifact) and isinstance(record, ModelRecord)
    if artifact is not ctx.artifact:
        ctx.notes.extend(artifact.notes)
        ctx.artifact, ctx.quantized, ctx.method = artifact, record, artifact.method
        ctx.agreement = agreement_with_fp32(ctx, record.evaluation)
    gate = selection.gate
    ctx.verdict = selection.verdict
    ctx.degraded = selection.degraded
    ctx.analysis.report.gate = gate
    ctx.analysis.report.mixed_precision = selection.mixed_precision
    if mp.mode is not api.MixedPrecisionMode.OFF and not pinnable and ctx.analysis.tool_problem:
        ctx.notes.append(f"mixed precision: {ctx.analysis.tool_problem}")
    if selection.exit_code is ExitCode.ACCEPTANCE_FAILED:
        ctx.analysis.failure = selection.message
    elif selection.degraded:
        ctx.warnings.append(f"published degraded: {selection.message}")
    ctx.log(selection.message)
    if mismatch is not None:
        ctx.analysis.report.gate = gate.model_copy(update={"on_failure": ctx.spec.acceptance.on_failure})
        _fail_on_preprocessing(ctx, mismatch)


def diagnose(ctx: RunContext) -> None:
    """FP32 vs the chosen artifact; each finding with its fixes. A preprocessing mismatch fails the gate.

    Reads the outputs the baseline and quantized evaluations kept (no model runs); only without an evaluation
    set do both models run, on a few calibration inputs.
    """
    backend, baseline = ctx.backend, ctx.baseline
    assert backend is not None and ctx.artifact is not None and baseline is not None
    calibration = ctx.sets.get("calibration")
    used = len(calibration) if calibration is not None else None
    contract = describe_contract(ctx.artifact.input)
    base = baseline.evaluation.kept() if baseline.evaluation is not None else None
    quant = (
        ctx.quantized.evaluation.kept() if ctx.quantized is not None and ctx.quantized.evaluation is not None else None
    )
    if base is not None and quant is not None and baseline.evaluation is not None:
        report = dg.diagnose_outputs(
            spec=ctx.spec,
            fp32=base,
            quantized=quant,
            labels=None if _unlabeled_evaluation(ctx) else baseline.evaluation.labels,
            input_stats=baseline.evaluation.input_stats,
            contract=contract,
            calibration_used=used,
        )
    else:
        fallback = _inputs(ctx, "calibration", DIAGNOSTIC_FALLBACK_SAMPLES)
        if fallback is None:
            ctx.notes.append("diagnostics skipped: no evaluation or calibration data to compare outputs on")
            return
        fp32 = backend.load(baseline.path, options=backend_options(ctx.spec))
        quantized = backend.load(ctx.artifact.path, options=backend_options(ctx.spec))
        report = dg.diagnose(
            spec=ctx.spec,
            inputs=fallback[0],
            labels=None,
            predict_fp32=feeder(fp32),
            predict_quantized=feeder(quantized),
            contract=contract,
            calibration_used=used,
        )
    b = baseline.evaluation
    q = ctx.quantized.evaluation if ctx.quantized is not None else None
    if b is not None and q is not None and b.latency_ms and q.latency_ms:
        widened = [
            n.removeprefix("ptq: ")
            for n in ctx.notes
            if n.startswith(("ptq: 16-bit weights for", "ptq: 16-bit activations for"))
        ]
        report.findings.append(
            dg.check_slower_than_float(fp32_ms=b.latency_ms, quantized_ms=q.latency_ms, widened=widened)
        )
    ctx.analysis.report.diagnostics = report
    for finding in report.fired:
        hint = f"; first try: {finding.fixes[0]}" if finding.fixes else ""
        ctx.warnings.append(f"{finding.check}: {finding.message}{hint}")
    mismatch = next((f for f in report.fired if f.check == "preprocessing-mismatch"), None)
    if mismatch is not None:
        _fail_on_preprocessing(ctx, mismatch)
    ctx.log("diagnostics: " + (", ".join(f.check for f in report.fired) or "nothing unusual"))


def _fail_on_preprocessing(ctx: RunContext, finding: Finding) -> None:
    """A preprocessing mismatch fails the run whatever acceptance.onFailure says: the calibration ranges were
    computed on wrongly scaled data, so any artifact (degraded ones too) is as wrong as the scaling."""
    if ctx.analysis.failure.startswith(PREPROCESSING_FAILURE):
        return
    fix = f" (fix: {finding.fixes[0]})" if finding.fixes else ""
    reason = f"{PREPROCESSING_FAILURE}: {finding.message}{fix}"
    ctx.analysis.failure = reason
    gate = ctx.analysis.report.gate
    if gate is not None:
        ctx.analysis.report.gate = gate.model_copy(update={"passed": False, "reasons": [reason, *gate.reasons]})
    if ctx.verdict is not None:
        ctx.verdict = dataclasses.replace(ctx.verdict, passed=False, reasons=[reason, *ctx.verdict.reasons])
    ctx.log(reason)


def scaling_mismatch(ctx: RunContext) -> Finding | None:
    """The FP32 preprocessing check alone, from the baseline evaluation (None when it cannot run or stays quiet)."""
    e = ctx.baseline.evaluation if ctx.baseline is not None else None
    if e is None or e.alternative_predictions is None or e.labels.size == 0 or _unlabeled_evaluation(ctx):
        return None
    scaling = ctx.spec.model.input.scaling
    _factor, words = dg.alternative_input_scale(scaling)
    n = len(e.alternative_predictions)
    finding = dg.check_preprocessing(
        model="fp32",
        correct=e.predictions[:n] == e.labels[:n],
        alternative_correct=e.alternative_predictions == e.labels[:n],
        alternative=words,
        configured=dg.describe_scaling(scaling),
    )
    return finding if finding.fired else None


def feeder(predictor: Predictor, chunk: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """Float inputs -> the model's input contract -> raw outputs, in chunks."""

    def predict(x: np.ndarray) -> np.ndarray:
        def parts() -> Iterator[np.ndarray]:
            for i in range(0, len(x), chunk):
                fed = to_input_contract(np.ascontiguousarray(x[i : i + chunk], dtype=np.float32), predictor.input)
                yield np.asarray(predictor.predict(fed), dtype=np.float32).reshape(len(fed), -1)

        return np.concatenate(list(parts()))

    return predict
