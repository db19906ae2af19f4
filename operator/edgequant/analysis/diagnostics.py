"""Troubleshooting checks from the reference guide, on raw outputs of the FP32 and quantized models. Pure numpy.

Each check returns a ``Finding`` whether it fired or stayed quiet, with the
numbers behind the verdict and, when it fired, the fixes in the reference
order: more and more diverse calibration data; MinMax instead of Entropy;
mixed precision; QAT. A preprocessing mismatch has its own fix.

Thresholds are module constants so docs/analysis.md and the tests name them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgequant.analysis.schema import DiagnosticsReport, Finding, Histogram, OutputComparison
from edgequant.analysis.tensor_error import tensor_error
from edgequant.api import v1alpha1 as api

#: output-mismatch fires when the SQNR of the quantized outputs against FP32's falls below this (dB; healthy INT8: 30-45) ...
MISMATCH_SQNR_DB = 20.0
#: ... or when the models agree on the top-1 class for fewer inputs than this.
MISMATCH_TOP1_AGREEMENT = 0.95
#: output-collapsed fires when the quantized outputs' spread is below this share of the FP32 spread ...
COLLAPSE_SPREAD_RATIO = 0.25
#: ... or one class wins on more than this share of inputs while FP32's most frequent class wins on less than half that share.
COLLAPSE_SINGLE_CLASS = 0.80
#: output-clipped fires when the quantized range covers less than this share of the FP32 range ...
CLIP_RANGE_RATIO = 0.75
#: ... and at least this share of quantized values sits on its range's ends (saturated).
CLIP_SATURATED_SHARE = 0.02
#: preprocessing-mismatch fires when another input scaling scores this much better (absolute accuracy).
PREPROCESSING_GAIN = 0.05
#: Bins of the output distribution histogram in the report.
HISTOGRAM_BINS = 40


def compare_outputs(fp32: np.ndarray, quantized: np.ndarray) -> OutputComparison:
    """MSE, SQNR, mean per-sample cosine, max abs difference and top-1 agreement of raw outputs (N, classes)."""
    f, q = _as_2d(fp32), _as_2d(quantized)
    if f.shape != q.shape:
        raise ValueError(f"FP32 outputs {f.shape} and quantized outputs {q.shape} differ in shape")
    diff = f - q
    norms = np.linalg.norm(f, axis=1) * np.linalg.norm(q, axis=1)
    dots = np.sum(f * q, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(np.abs(diff).sum(axis=1) == 0, 1.0, 0.0))
    return OutputComparison(
        samples=int(f.shape[0]),
        mse=float(np.mean(diff**2)),
        sqnr_db=tensor_error(f, q).sqnr_db,
        cosine=float(np.mean(cos)),
        max_abs=float(np.max(np.abs(diff))),
        top1_agreement=float(np.mean(f.argmax(axis=1) == q.argmax(axis=1))),
    )


def reference_fixes(spec: api.QuantizationJobSpec) -> list[str]:
    """The reference troubleshooting order, worded for this spec."""
    fixes: list[str] = []
    cal = spec.calibration
    if cal is not None:
        fixes.append(
            f"use more and more diverse calibration data: real, unaugmented images of every class, preprocessed like "
            f"inference (calibration.samples is {cal.samples}; 500-1000 recommended)"
        )
        if cal.algorithm is not api.CalibrationAlgorithm.MINMAX:
            fixes.append(f"set calibration.algorithm to minmax instead of {cal.algorithm.value}")
    else:
        fixes.append("use a method calibrated on representative data (more, more diverse calibration data)")
    if spec.mixed_precision.mode is not api.MixedPrecisionMode.AUTO:
        fixes.append("keep the sensitive layers in float: mixedPrecision.mode auto (or manual with pinnedLayers)")
    else:
        fixes.append(f"allow more layers in float: raise mixedPrecision.maxPinnedLayers (now {spec.mixed_precision.max_pinned_layers})")
    if not spec.method.needs_training:
        fixes.append("quantization-aware training: tflite-qat or torch-qat with training data")
    return fixes


def check_mismatch(
    cmp: OutputComparison, *, fixes: list[str], retrained: tuple[float, float, float] | None = None
) -> Finding:
    """Quantized outputs that stray from FP32's.

    ``retrained`` is (FP32 accuracy, quantized accuracy, allowed drop) for methods that fine-tune (QAT): their
    weights moved on purpose, so divergence from the original FP32 outputs is expected and only counts when
    accuracy fell by more than the allowed drop.
    """
    diverged = cmp.sqnr_db < MISMATCH_SQNR_DB or cmp.top1_agreement < MISMATCH_TOP1_AGREEMENT
    evidence = {"sqnrDb": cmp.sqnr_db, "top1Agreement": cmp.top1_agreement, "cosine": cmp.cosine, "mse": cmp.mse, "maxAbs": cmp.max_abs}
    numbers = f"SQNR {cmp.sqnr_db:.1f} dB, same top-1 class on {cmp.top1_agreement:.1%}, mean cosine {cmp.cosine:.3f}"
    if diverged and retrained is not None:
        fp32_accuracy, quantized_accuracy, allowed_drop = retrained
        evidence |= {"fp32Accuracy": fp32_accuracy, "quantizedAccuracy": quantized_accuracy}
        if fp32_accuracy - quantized_accuracy <= allowed_drop:
            return Finding(
                check="output-mismatch",
                fired=False,
                message=(
                    f"quantized outputs differ from the original FP32 model's ({numbers}) as fine-tuning intends: "
                    f"accuracy {quantized_accuracy:.4f} vs FP32 {fp32_accuracy:.4f}, within the allowed drop {allowed_drop:g}"
                ),
                evidence=evidence,
                fixes=[],
            )
    return Finding(
        check="output-mismatch",
        fired=diverged,
        message=(
            f"quantized outputs diverge from FP32 on the same {cmp.samples} inputs: {numbers}, MSE {cmp.mse:.4g}, max abs {cmp.max_abs:.4g}"
            if diverged
            else f"quantized outputs follow FP32: {numbers}"
        ),
        evidence=evidence,
        fixes=fixes if diverged else [],
    )


def check_collapsed(fp32: np.ndarray, quantized: np.ndarray, *, fixes: list[str]) -> Finding:
    """Outputs squashed near zero or to one answer: spread ratio, or one class winning almost everywhere."""
    f, q = _as_2d(fp32), _as_2d(quantized)
    f_spread = float(np.std(f))
    q_spread = float(np.std(q))
    ratio = q_spread / f_spread if f_spread > 0 else 1.0
    q_share = _top_class_share(q)
    f_share = _top_class_share(f)
    one_class = q_share > COLLAPSE_SINGLE_CLASS and f_share < q_share / 2
    fired = ratio < COLLAPSE_SPREAD_RATIO or one_class
    if ratio < COLLAPSE_SPREAD_RATIO:
        message = f"quantized outputs collapsed: their spread is {ratio:.1%} of FP32's (std {q_spread:.4g} vs {f_spread:.4g})"
    elif one_class:
        message = f"quantized outputs collapsed to one class: it wins on {q_share:.1%} of inputs (FP32: {f_share:.1%})"
    else:
        message = f"quantized output spread is {ratio:.1%} of FP32's; the most frequent class wins on {q_share:.1%} of inputs"
    return Finding(
        check="output-collapsed",
        fired=fired,
        message=message,
        evidence={"spreadRatio": ratio, "quantizedTopClassShare": q_share, "fp32TopClassShare": f_share},
        fixes=fixes if fired else [],
    )


def check_clipped(fp32: np.ndarray, quantized: np.ndarray, *, fixes: list[str]) -> Finding:
    """Outputs clipped to a narrow range: the quantized range is narrow and values pile up on its ends."""
    f, q = _as_2d(fp32).ravel(), _as_2d(quantized).ravel()
    f_lo, f_hi = np.percentile(f, [0.5, 99.5])
    f_range = float(f_hi - f_lo)
    q_lo, q_hi = float(q.min()), float(q.max())
    covered = (q_hi - q_lo) / f_range if f_range > 0 else 1.0
    span = q_hi - q_lo
    tol = 1e-6 * max(1.0, abs(q_lo), abs(q_hi)) if span == 0 else span * 1e-3
    saturated = float(np.mean((q <= q_lo + tol) | (q >= q_hi - tol))) if span > 0 else 1.0
    f_saturated = float(np.mean((f <= f.min() + (f.max() - f.min()) * 1e-3) | (f >= f.max() - (f.max() - f.min()) * 1e-3)))
    fired = covered < CLIP_RANGE_RATIO and saturated >= CLIP_SATURATED_SHARE and saturated > 2 * f_saturated
    return Finding(
        check="output-clipped",
        fired=fired,
        message=(
            f"quantized outputs are clipped to [{q_lo:.4g}, {q_hi:.4g}], {covered:.1%} of the FP32 range "
            f"[{f_lo:.4g}, {f_hi:.4g}]; {saturated:.1%} of values sit on the ends"
            if fired
            else f"quantized outputs cover {covered:.1%} of the FP32 range; {saturated:.1%} of values on the ends"
        ),
        evidence={"rangeCovered": covered, "saturatedShare": saturated, "fp32SaturatedShare": f_saturated},
        fixes=fixes if fired else [],
    )


def alternative_input_scale(scaling: api.Scaling) -> tuple[float, str]:
    """The other common input scaling: x255 when the spec feeds 0-1-ish floats, /255 when it feeds 0-255."""
    if scaling.scale * 255.0 <= 4.0:
        return 255.0, "inputs multiplied by 255 (0-255 pixel values)"
    return 1.0 / 255.0, "inputs divided by 255 (0-1 floats)"


def check_preprocessing(
    *, model: str, accuracy: float, alternative_accuracy: float, alternative: str, contract: str
) -> Finding:
    """Fires when re-scoring the same model with the other input scaling scores clearly better."""
    gain = alternative_accuracy - accuracy
    fired = gain >= PREPROCESSING_GAIN
    if model == "fp32":
        fix = (
            "the FP32 model itself scores better with the other scaling: set spec.model.input.scaling to how the model "
            "was trained (scale 1.0 for 0-255 input, 1/255 for 0-1)"
        )
    else:
        fix = f"feed the quantized model what its input contract says ({contract}); a full-INT8 model takes uint8 0-255, not float/255"
    return Finding(
        check="preprocessing-mismatch",
        fired=fired,
        message=(
            f"{model} model scores {alternative_accuracy:.4f} with {alternative} but {accuracy:.4f} as configured: "
            "the input scaling does not match the model"
            if fired
            else f"{model} model: {accuracy:.4f} as configured, {alternative_accuracy:.4f} with {alternative}"
        ),
        evidence={"accuracy": accuracy, "alternativeAccuracy": alternative_accuracy},
        fixes=[fix] if fired else [],
    )


def histogram(fp32: np.ndarray, quantized: np.ndarray, *, bins: int = HISTOGRAM_BINS) -> Histogram:
    f, q = _as_2d(fp32).ravel(), _as_2d(quantized).ravel()
    lo = float(min(np.percentile(f, 0.1), np.percentile(q, 0.1)))
    hi = float(max(np.percentile(f, 99.9), np.percentile(q, 99.9)))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    fc, _ = np.histogram(np.clip(f, lo, hi), bins=edges)
    qc, _ = np.histogram(np.clip(q, lo, hi), bins=edges)
    return Histogram(edges=[float(e) for e in edges], fp32=[int(c) for c in fc], quantized=[int(c) for c in qc])


def diagnose(
    *,
    spec: api.QuantizationJobSpec,
    inputs: np.ndarray,
    labels: np.ndarray | None,
    predict_fp32: Callable[[np.ndarray], np.ndarray],
    predict_quantized: Callable[[np.ndarray], np.ndarray],
    contract: str = "",
) -> DiagnosticsReport:
    """Run every check on the same preprocessed float inputs.

    ``predict_*`` take float inputs as the spec's preprocessing makes them and
    return raw outputs; each converts to its model's input contract itself.
    Without labels the preprocessing check is skipped (it needs accuracy).
    """
    fp32 = predict_fp32(inputs)
    quant = predict_quantized(inputs)
    fixes = reference_fixes(spec)
    cmp = compare_outputs(fp32, quant)
    retrained = None
    if spec.method.needs_training and labels is not None:
        retrained = (_accuracy(fp32, labels), _accuracy(quant, labels), spec.acceptance.max_accuracy_drop)
    findings = [
        check_mismatch(cmp, fixes=fixes, retrained=retrained),
        check_collapsed(fp32, quant, fixes=fixes),
        check_clipped(fp32, quant, fixes=fixes),
    ]
    if labels is not None:
        factor, words = alternative_input_scale(spec.model.input.scaling)
        for name, predict, outputs in (("fp32", predict_fp32, fp32), ("quantized", predict_quantized, quant)):
            as_is = _accuracy(outputs, labels)
            other = _accuracy(predict(inputs * np.float32(factor)), labels)
            finding = check_preprocessing(
                model=name, accuracy=as_is, alternative_accuracy=other, alternative=words, contract=contract
            )
            findings.append(finding)
    return DiagnosticsReport(outputs=cmp, findings=findings, distribution=histogram(fp32, quant))


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(_as_2d(outputs).argmax(axis=1) == np.asarray(labels).ravel()))


def _top_class_share(outputs: np.ndarray) -> float:
    counts = np.bincount(outputs.argmax(axis=1), minlength=outputs.shape[1])
    return float(counts.max() / max(1, counts.sum()))


def _as_2d(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim != 2 else a
