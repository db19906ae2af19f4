"""Troubleshooting checks from the reference guide, on raw outputs of the FP32 and quantized models. Pure numpy.

Each check returns a ``Finding`` whether it fired or stayed quiet, with the
numbers behind the verdict and, when it fired, the fixes in the reference
order, worded for what the spec already sets: more (or, once enough, more
diverse) calibration data; MinMax instead of Entropy or Percentile; mixed
precision; QAT. A preprocessing mismatch has its own fix.

The checks read what the evaluations already produced (``ModelOutputs``: the
raw outputs of the first inputs, every prediction, the predictions with the
other input scaling; ``InputStats`` of the values fed), so diagnosing costs no
model runs; ``diagnose`` runs predictors only where no evaluation did.

Thresholds are module constants so docs/analysis.md and the tests name them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgequant.analysis.tensor_error import tensor_error
from edgequant.api import v1alpha1 as api
from edgequant.report.schema import DiagnosticsReport, Finding, Histogram, OutputComparison

#: calibration.samples the reference guide recommends: fewer -> "more data"; within or above -> "more diverse data".
CALIBRATION_RECOMMENDED = (500, 1000)
#: output-mismatch fires when the SQNR of the quantized outputs against FP32's falls below this (dB; healthy INT8: 30-45) ...
MISMATCH_SQNR_DB = 20.0
#: ... or when the models agree on the top-1 class for fewer inputs than this.
MISMATCH_TOP1_AGREEMENT = 0.95
#: output-collapsed fires when the quantized outputs' spread is below this share of the FP32 spread ...
COLLAPSE_SPREAD_RATIO = 0.25
#: ... or one class wins on more than this share of inputs (models with fewer than COLLAPSE_MANY_CLASSES classes) ...
COLLAPSE_SINGLE_CLASS = 0.80
#: ... or on more than COLLAPSE_MAJORITY of inputs for models with at least this many classes: a balanced set gives
#: each class ~1/K <= 10% of the inputs, so a majority is >= 5x a class's fair share ...
COLLAPSE_MANY_CLASSES = 10
COLLAPSE_MAJORITY = 0.50
#: ... in both cases only while FP32's most frequent class wins on at most this share of the quantized one's
#: (an evaluation set that really is mostly one class is not a collapse).
COLLAPSE_FP32_SHARE = 0.5
#: fp32-undecided counts an input as a near-tie when FP32's top class leads the runner-up by less than this
#: probability (softmax of the outputs, unless they already are distributions) ...
NEAR_TIE_MARGIN = 0.05
#: ... and fires when more than this share of the inputs are near-ties: a classifier on data of its own domain decides
#: most inputs, and a top-1 flip between two classes that FP32 itself scores within 0.05 says little about quantization.
UNDECIDED_SHARE = 0.25
#: output-clipped fires when the quantized range covers less than this share of the FP32 range ...
CLIP_RANGE_RATIO = 0.75
#: ... and at least this share of quantized values sits on its range's ends (saturated).
CLIP_SATURATED_SHARE = 0.02
#: preprocessing-mismatch fires when another input scaling scores this much better (absolute accuracy) ...
PREPROCESSING_GAIN = 0.05
#: ... and the gain is no accident: McNemar's z over the inputs only one of the two scalings got right is at least
#: this (one-sided p ~ 0.001), so a fired check can fail the gate without failing good runs.
PREPROCESSING_Z = 3.0
#: Evaluation inputs scored again with the other scaling (the first ones, in data order).
PREPROCESSING_SAMPLES = 256
#: input-range fires when the values fed to the model span less than this: every common input convention
#: ([0, 1], [-1, 1], mean/std-normalised, 0-255) spans at least one unit over a set of images ...
INPUT_MIN_SPAN = 0.25
#: ... or reach beyond this magnitude: none goes past +-255 (raw pixels; mean-subtracted 0-255 stays within it).
INPUT_MAX_ABS = 300.0
#: Bins of the output distribution histogram in the report.
HISTOGRAM_BINS = 40


@dataclass(frozen=True)
class ModelOutputs:
    """What one model's evaluation kept for the checks, all in the evaluation set's order."""

    outputs: np.ndarray
    """Raw outputs (N, classes) of the first N inputs."""
    predictions: np.ndarray | None = None
    """argmax over every scored input (None: taken from ``outputs``)."""
    alternative_predictions: np.ndarray | None = None
    """argmax over the first inputs fed with the other input scaling (``alternative_scaling``); None: not scored."""

    @property
    def all_predictions(self) -> np.ndarray:
        return self.predictions if self.predictions is not None else _as_2d(self.outputs).argmax(axis=1)


@dataclass(frozen=True)
class InputStats:
    """The preprocessed float values fed to the model (before any dtype conversion), over the evaluation batches."""

    low: float
    high: float
    mean: float
    std: float
    span: float | None = None
    """The smallest per-channel max - min (channels differ by their mean/std; None: not measured per channel)."""

    @classmethod
    def of(cls, x: np.ndarray, *, channel_axis: int | None = None) -> InputStats:
        a = np.asarray(x, dtype=np.float64)
        lows, highs = channel_ranges(a, channel_axis)
        return cls(
            low=float(a.min()),
            high=float(a.max()),
            mean=float(a.mean()),
            std=float(a.std()),
            span=float((highs - lows).min()),
        )


def channel_axis(contract: api.InputContract) -> int:
    """Axis of the channels in a preprocessed batch."""
    return 1 if contract.layout is api.Layout.NCHW else -1


def channel_ranges(x: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel [min], [max] of a batch (one entry for the whole tensor when ``axis`` is None or out of range)."""
    a = np.asarray(x)
    if axis is None or a.ndim < 2 or not -a.ndim <= axis < a.ndim:
        return np.array([a.min()], np.float64), np.array([a.max()], np.float64)
    per = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
    return per.min(axis=1).astype(np.float64), per.max(axis=1).astype(np.float64)


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


def reference_fixes(spec: api.QuantizationJobSpec, *, calibration_used: int | None = None) -> list[str]:
    """The reference troubleshooting order, worded for what this spec already sets.

    ``calibration_used``: images that actually reached calibration (the dataset may hold fewer than
    calibration.samples asks for).
    """
    fixes: list[str] = []
    cal = spec.calibration
    low, high = CALIBRATION_RECOMMENDED
    if cal is not None and (spec.method.needs_calibration or spec.method.needs_training):
        used = cal.samples if calibration_used is None else min(calibration_used, cal.samples)
        if used < low and used < cal.samples:
            fixes.append(
                f"use more calibration data: only {used} usable images reached calibration (calibration.samples asks for "
                f"{cal.samples}; {low}-{high} recommended): add real, unaugmented images of every class to calibration.dataset"
            )
        elif used < low:
            fixes.append(
                f"use more calibration data: raise calibration.samples from {used} to {low}-{high} (real, unaugmented "
                "images of every class, preprocessed like inference)"
            )
        else:
            fixes.append(
                f"use more diverse calibration data: {used} samples is already {'within' if used <= high else 'above'} the "
                f"recommended {low}-{high}, so cover what the model will see instead: every class, scene, lighting and "
                "camera, as real, unaugmented images preprocessed like inference"
            )
        algorithm = _effective_algorithm(spec)
        if algorithm is api.CalibrationAlgorithm.ENTROPY:
            fixes.append(
                "set calibration.algorithm to minmax instead of entropy (KL ranges clip the outliers some layers need)"
            )
        elif algorithm is api.CalibrationAlgorithm.PERCENTILE:
            fixes.append(
                f"set calibration.algorithm to minmax instead of percentile (or raise calibration.percentile from {cal.percentile:g} "
                "towards 100)"
            )
    elif spec.method.needs_training:
        fixes.append("train on more and more varied data: training.dataset, more training.epochs")
    else:
        fixes.append(
            f"use a method calibrated on representative data instead of {spec.method.value} (tflite-int8, onnx-static, tensorrt-int8)"
        )
    mp = spec.mixed_precision
    if _can_pin(spec.method):
        if mp.mode is not api.MixedPrecisionMode.AUTO:
            fixes.append("keep the sensitive layers in float: mixedPrecision.mode auto (or manual with pinnedLayers)")
        else:
            fixes.append(
                f"allow more layers in float: raise mixedPrecision.maxPinnedLayers (now {mp.max_pinned_layers})"
            )
    elif spec.method is api.Method.TENSORRT_INT8:
        fixes.append("keep the sensitive layers in float: method tensorrt-mixed with mixedPrecision.mode auto")
    if not spec.method.needs_training:
        fixes.append("quantization-aware training: tflite-qat or torch-qat with training data")
    return fixes


def _effective_algorithm(spec: api.QuantizationJobSpec) -> api.CalibrationAlgorithm:
    """The range algorithm the backend really uses (TFLiteConverter always calibrates with min/max)."""
    assert spec.calibration is not None
    fixed = spec.method.row.range_algorithm
    return api.CalibrationAlgorithm(fixed) if fixed is not None else spec.calibration.algorithm


def _can_pin(method: api.Method) -> bool:
    """Methods whose artifact can keep layers in float (mixedPrecision)."""
    return method.keeps_layers_float


def check_mismatch(
    cmp: OutputComparison, *, fixes: list[str], retrained: tuple[float, float, float] | None = None
) -> Finding:
    """Quantized outputs that stray from FP32's.

    ``retrained`` is (FP32 accuracy, quantized accuracy, allowed drop) for methods that fine-tune (QAT): their
    weights moved on purpose, so divergence from the original FP32 outputs is expected and only counts when
    accuracy fell by more than the allowed drop.
    """
    diverged = cmp.sqnr_db < MISMATCH_SQNR_DB or cmp.top1_agreement < MISMATCH_TOP1_AGREEMENT
    evidence = {
        "sqnrDb": cmp.sqnr_db,
        "top1Agreement": cmp.top1_agreement,
        "cosine": cmp.cosine,
        "mse": cmp.mse,
        "maxAbs": cmp.max_abs,
    }
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


def collapse_share_threshold(classes: int) -> float:
    """Share of inputs one class must win for a one-class collapse (see COLLAPSE_MAJORITY)."""
    return COLLAPSE_MAJORITY if classes >= COLLAPSE_MANY_CLASSES else COLLAPSE_SINGLE_CLASS


def check_collapsed(
    fp32: np.ndarray,
    quantized: np.ndarray,
    *,
    fixes: list[str],
    fp32_predictions: np.ndarray | None = None,
    quantized_predictions: np.ndarray | None = None,
) -> Finding:
    """Outputs squashed near zero or to one answer: spread ratio, or one class winning most inputs.

    The class shares come from the predictions over the whole evaluation set when given, else from the outputs.
    """
    f, q = _as_2d(fp32), _as_2d(quantized)
    classes = f.shape[1]
    f_spread = float(np.std(f))
    q_spread = float(np.std(q))
    ratio = q_spread / f_spread if f_spread > 0 else 1.0
    q_share = _top_class_share(q.argmax(axis=1) if quantized_predictions is None else quantized_predictions, classes)
    f_share = _top_class_share(f.argmax(axis=1) if fp32_predictions is None else fp32_predictions, classes)
    threshold = collapse_share_threshold(classes)
    one_class = classes > 1 and q_share > threshold and f_share <= q_share * COLLAPSE_FP32_SHARE
    fired = ratio < COLLAPSE_SPREAD_RATIO or one_class
    if ratio < COLLAPSE_SPREAD_RATIO:
        message = (
            f"quantized outputs collapsed: their spread is {ratio:.1%} of FP32's (std {q_spread:.4g} vs {f_spread:.4g})"
        )
    elif one_class:
        message = (
            f"quantized outputs collapsed to one class: it wins on {q_share:.1%} of inputs (FP32's most frequent class: "
            f"{f_share:.1%}; {classes} classes)"
        )
    else:
        message = f"quantized output spread is {ratio:.1%} of FP32's; the most frequent class wins on {q_share:.1%} of inputs (FP32: {f_share:.1%})"
    return Finding(
        check="output-collapsed",
        fired=fired,
        message=message,
        evidence={
            "spreadRatio": ratio,
            "quantizedTopClassShare": q_share,
            "fp32TopClassShare": f_share,
            "classes": float(classes),
            "topClassThreshold": threshold,
        },
        fixes=fixes if fired else [],
    )


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Rows that already are distributions (non-negative, summing to 1) as they are, else the softmax of the rows."""
    a = _as_2d(outputs)
    if a.size and a.min() >= 0 and np.allclose(a.sum(axis=1), 1.0, atol=1e-3):
        return a
    z = np.exp(a - a.max(axis=1, keepdims=True))
    probabilities: np.ndarray = z / z.sum(axis=1, keepdims=True)
    return probabilities


def decided(fp32: np.ndarray) -> np.ndarray:
    """Per input: FP32's top class leads the runner-up by at least ``NEAR_TIE_MARGIN`` probability."""
    p = class_probabilities(fp32)
    if p.shape[1] < 2:
        return np.ones(p.shape[0], dtype=bool)
    top_two = -np.partition(-p, 1, axis=1)[:, :2]
    mask: np.ndarray = top_two[:, 0] - top_two[:, 1] >= NEAR_TIE_MARGIN
    return mask


def check_undecided(fp32: np.ndarray, quantized: np.ndarray) -> Finding:
    """Evaluation data on which FP32 itself hesitates: top-1 agreement then counts coin flips.

    Splits agreement into the inputs FP32 decides and its near-ties, so a reader can tell quantization damage
    (flips where FP32 was sure) from noise (flips between classes FP32 scores alike).
    """
    f, q = _as_2d(fp32), _as_2d(quantized)
    sure = decided(f)
    same = f.argmax(axis=1) == q.argmax(axis=1)
    n, n_sure = len(sure), int(sure.sum())
    share = 1.0 - n_sure / n if n else 0.0
    median_top1 = float(np.median(class_probabilities(f).max(axis=1))) if n else 0.0
    on_sure = float(same[sure].mean()) if n_sure else None
    on_ties = float(same[~sure].mean()) if n_sure < n else None
    fired = f.shape[1] > 1 and share > UNDECIDED_SHARE
    evidence = {
        "undecidedShare": share,
        "medianTop1Probability": median_top1,
        "nearTieMargin": NEAR_TIE_MARGIN,
        "classes": float(f.shape[1]),
    }
    if on_sure is not None:
        evidence["decidedAgreement"] = on_sure
    if on_ties is not None:
        evidence["undecidedAgreement"] = on_ties
    split = f"the models agree on {_share(on_sure)} of the {n_sure} inputs FP32 decides" + (
        f" and on {_share(on_ties)} of its {n - n_sure} near-ties" if on_ties is not None else ""
    )
    if fired:
        message = (
            f"FP32 itself is undecided on {share:.0%} of {n} inputs (its top class leads the next by under "
            f"{NEAR_TIE_MARGIN:g} probability; median top-1 probability {median_top1:.3f} over {f.shape[1]} classes): "
            f"{split}. A flip between classes FP32 scores alike is noise more than quantization damage, so top-1 "
            "agreement on this data understates the artifact; the data may not be from the model's domain"
        )
    else:
        message = (
            f"FP32 decides {1.0 - share:.0%} of {n} inputs (top class ahead by at least {NEAR_TIE_MARGIN:g}); {split}"
        )
    return Finding(
        check="fp32-undecided",
        fired=fired,
        message=message,
        evidence=evidence,
        fixes=[
            "evaluate (and calibrate) on inputs from the deployment domain, of the classes the model was trained on",
            "budget the output error too (acceptance.minSqnrDb): SQNR does not flip on near-ties",
        ]
        if fired
        else [],
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


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
    f_saturated = float(
        np.mean((f <= f.min() + (f.max() - f.min()) * 1e-3) | (f >= f.max() - (f.max() - f.min()) * 1e-3))
    )
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


#: slower-than-float fires below this speedup (FP32 / quantized median latency), and only for models whose FP32 median
#: is at least SLOWER_MIN_FP32_MS (a 224x224 network, not a call-overhead-bound toy).
SLOWER_THAN_FLOAT_SPEEDUP = 0.9
SLOWER_MIN_FP32_MS = 1.0


def check_slower_than_float(*, fp32_ms: float, quantized_ms: float, widened: list[str]) -> Finding:
    """The published model runs slower than FP32 on the worker's CPU: quantizing for speed did the opposite.

    ``widened``: what the run kept at 16 bit (spec.ptq notes); such tensors run unfused on ONNX Runtime's CPU kernels,
    which is the usual cause, so the fixes start there.
    """
    speedup = fp32_ms / quantized_ms if quantized_ms > 0 else float("inf")
    # below a millisecond per image a latency is mostly call overhead, and single runs vary by about 10 %
    fired = fp32_ms >= SLOWER_MIN_FP32_MS and speedup < SLOWER_THAN_FLOAT_SPEEDUP
    fixes = (
        [
            "16-bit weights or activations (spec.ptq, chosen because acceptance.minAgreement asked for them) run "
            "unfused on ONNX Runtime's CPU kernels: lower acceptance.minAgreement, or set spec.ptq.sixteenBitWeights "
            "and sixteenBitActivations off and keep the few most sensitive layers in float (mixedPrecision) instead"
        ]
        if widened
        else []
    ) + [
        "latency is measured on the worker's CPU, not on the target: measure it on the device before deciding",
    ]
    return Finding(
        check="slower-than-float",
        fired=fired,
        message=(
            f"the quantized model takes {quantized_ms:.2f} ms per image against FP32's {fp32_ms:.2f} ms on the "
            f"worker's CPU ({speedup:.2f}x)" + (f"; kept at 16 bit: {'; '.join(widened)}" if widened else "")
        ),
        evidence={"fp32Ms": fp32_ms, "quantizedMs": quantized_ms, "speedup": speedup},
        fixes=fixes if fired else [],
    )


def alternative_scaling(scaling: api.Scaling) -> tuple[float, api.Scaling]:
    """The other common pixel unit: x255 when scale maps pixels to ~[0, 1] (or [-1, 1]), /255 when it keeps 0-255.

    Scale and offset change by the factor, mean and std stay: so it also covers mean/std given in the other units
    (``(x/255 - m/255) / (s/255)`` is ``(x - m) / s``).
    """
    factor = 255.0 if scaling.scale * 255.0 <= 4.0 else 1.0 / 255.0
    return factor, scaling.model_copy(update={"scale": scaling.scale * factor, "offset": scaling.offset * factor})


def alternative_input_scale(scaling: api.Scaling) -> tuple[float, str]:
    """The factor of ``alternative_scaling`` and the scaling it means, in words."""
    factor, other = alternative_scaling(scaling)
    unit = "0-255 pixel values" if factor > 1 else "0-1 floats"
    return factor, f"{describe_scaling(other)} ({unit})"


def describe_scaling(scaling: api.Scaling) -> str:
    """A scaling as spec values: scale 0.00392157, offset, mean/std when set."""
    words = f"scale {scaling.scale:.6g}" + (f", offset {scaling.offset:g}" if scaling.offset else "")
    if scaling.mean is not None and scaling.std is not None:
        words += f", mean {scaling.mean}, std {scaling.std}"
    return words


def rescale_inputs(x: np.ndarray, contract: api.InputContract, factor: float) -> np.ndarray:
    """Preprocessed inputs as ``alternative_scaling`` would have made them: the pixels (before mean/std) x ``factor``.

    ``(f*p - m) / s = f * (p - m) / s + (f - 1) * m / s``, per channel, so the raw pixels are not needed.
    """
    x = np.asarray(x, dtype=np.float32)
    s = contract.scaling
    out = x * np.float32(factor)
    if s.mean is not None and s.std is not None:
        shift = (factor - 1.0) * np.asarray(s.mean, np.float32) / np.asarray(s.std, np.float32)
        if x.ndim == 4 and contract.layout is api.Layout.NCHW:
            shift = shift.reshape(-1, 1, 1)
        out = out + shift.astype(np.float32)
    return out.astype(np.float32)


def check_preprocessing(
    *,
    model: str,
    correct: np.ndarray,
    alternative_correct: np.ndarray,
    alternative: str,
    configured: str = "",
    contract: str = "",
) -> Finding:
    """Fires when the same inputs fed with the other scaling score clearly and significantly better.

    ``correct`` / ``alternative_correct``: per-input hits as configured and with the other scaling (same inputs).
    """
    n = len(alternative_correct)
    hit, alt_hit = np.asarray(correct[:n], bool), np.asarray(alternative_correct, bool)
    accuracy, alternative_accuracy = float(hit.mean()), float(alt_hit.mean())
    only_configured, only_alternative = int((hit & ~alt_hit).sum()), int((~hit & alt_hit).sum())
    discordant = only_configured + only_alternative
    z = (only_alternative - only_configured) / math.sqrt(discordant) if discordant else 0.0
    gain = alternative_accuracy - accuracy
    fired = gain >= PREPROCESSING_GAIN and z >= PREPROCESSING_Z
    as_configured = f"as configured ({configured})" if configured else "as configured"
    if model == "fp32":
        message = (
            f"the FP32 model itself scores {alternative_accuracy:.4f} with spec.model.input.scaling {alternative} but "
            f"{accuracy:.4f} {as_configured} on the same {n} inputs: the input scaling does not match how the model was trained"
        )
        fix = (
            f"set spec.model.input.scaling to how the model was trained ({alternative} scored better); if the model "
            "rescales inside (e.g. a Keras Rescaling layer), feed it what that layer expects"
        )
    else:
        message = (
            f"the quantized model scores {alternative_accuracy:.4f} with inputs on the other scale ({alternative}) but "
            f"{accuracy:.4f} {as_configured} on the same {n} inputs: it is not fed what its input contract says"
        )
        fix = f"feed the quantized model what its input contract says ({contract}); a full-INT8 model takes uint8 0-255, not float/255"
    return Finding(
        check="preprocessing-mismatch",
        fired=fired,
        message=message
        if fired
        else f"{model} model: {accuracy:.4f} {as_configured}, {alternative_accuracy:.4f} with {alternative}",
        evidence={
            "accuracy": accuracy,
            "alternativeAccuracy": alternative_accuracy,
            "samples": float(n),
            "onlyConfiguredRight": float(only_configured),
            "onlyAlternativeRight": float(only_alternative),
            "z": z,
        },
        fixes=[fix] if fired else [],
    )


def check_input_range(stats: InputStats, scaling: api.Scaling) -> Finding:
    """The values actually fed, against what any common input convention gives (see INPUT_MIN_SPAN, INPUT_MAX_ABS).

    A warning, not a gate failure: it reads the spec's numbers, not accuracy (preprocessing-mismatch does that).
    """
    span = stats.high - stats.low if stats.span is None else stats.span
    peak = max(abs(stats.low), abs(stats.high))
    narrow, wide = span < INPUT_MIN_SPAN, peak > INPUT_MAX_ABS
    numbers = f"[{stats.low:.4g}, {stats.high:.4g}] (each channel spans at least {span:.3g}), mean {stats.mean:.4g}, std {stats.std:.4g}"
    configured = describe_scaling(scaling)
    fixes: list[str] = []
    if narrow:
        message = f"the model is fed an almost constant input: values in {numbers} ({configured})"
        fixes.append(
            "give spec.model.input.scaling.mean and .std in the units scale produces (mean/std in 0-255 units need "
            "scale 1.0, or divide them by 255 to keep scale 1/255)"
        )
    elif wide:
        message = f"the model is fed values far beyond any common input convention: {numbers} ({configured})"
        fixes.append(
            "give spec.model.input.scaling.mean and .std in the units scale produces (mean/std in 0-1 units need "
            "scale 1/255, or multiply them by 255 to keep scale 1.0)"
        )
    else:
        message = f"values fed to the model: {numbers}"
    return Finding(
        check="input-range",
        fired=narrow or wide,
        message=message,
        evidence={"low": stats.low, "high": stats.high, "mean": stats.mean, "std": stats.std, "channelSpan": span},
        fixes=fixes,
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


def diagnose_outputs(
    *,
    spec: api.QuantizationJobSpec,
    fp32: ModelOutputs,
    quantized: ModelOutputs,
    labels: np.ndarray | None,
    input_stats: InputStats | None = None,
    contract: str = "",
    calibration_used: int | None = None,
) -> DiagnosticsReport:
    """Every check on outputs the evaluations already produced (same inputs, same order for both models).

    Without labels the preprocessing check is skipped (it needs accuracy); it runs for each model whose
    ``alternative_predictions`` were scored.
    """
    n = min(len(fp32.outputs), len(quantized.outputs))
    f, q = _as_2d(fp32.outputs[:n]), _as_2d(quantized.outputs[:n])
    fixes = reference_fixes(spec, calibration_used=calibration_used)
    cmp = compare_outputs(f, q)
    f_pred, q_pred = fp32.all_predictions, quantized.all_predictions
    same_set = len(f_pred) == len(q_pred)
    retrained = None
    if spec.method.needs_training and labels is not None:
        retrained = (
            _hits(f_pred, labels).mean().item(),
            _hits(q_pred, labels).mean().item(),
            spec.acceptance.max_accuracy_drop,
        )
    findings = [
        check_mismatch(cmp, fixes=fixes, retrained=retrained),
        check_collapsed(
            f,
            q,
            fixes=fixes,
            fp32_predictions=f_pred if same_set else None,
            quantized_predictions=q_pred if same_set else None,
        ),
        check_clipped(f, q, fixes=fixes),
        check_undecided(f, q),
    ]
    if input_stats is not None:
        findings.append(check_input_range(input_stats, spec.model.input.scaling))
    if labels is not None:
        _factor, words = alternative_input_scale(spec.model.input.scaling)
        configured = describe_scaling(spec.model.input.scaling)
        for name, outputs in (("fp32", fp32), ("quantized", quantized)):
            alt = outputs.alternative_predictions
            if alt is None:
                continue
            findings.append(
                check_preprocessing(
                    model=name,
                    correct=_hits(outputs.all_predictions[: len(alt)], labels),
                    alternative_correct=_hits(alt, labels),
                    alternative=words,
                    configured=configured,
                    contract=contract,
                )
            )
    return DiagnosticsReport(outputs=cmp, findings=findings, distribution=histogram(f, q))


def diagnose(
    *,
    spec: api.QuantizationJobSpec,
    inputs: np.ndarray,
    labels: np.ndarray | None,
    predict_fp32: Callable[[np.ndarray], np.ndarray],
    predict_quantized: Callable[[np.ndarray], np.ndarray],
    contract: str = "",
    calibration_used: int | None = None,
) -> DiagnosticsReport:
    """Run both models on the same preprocessed float inputs, then every check (``diagnose_outputs``).

    For data no evaluation scored. ``predict_*`` take float inputs as the spec's preprocessing makes them and
    return raw outputs; each converts to its model's input contract itself. With labels, the first
    ``PREPROCESSING_SAMPLES`` inputs are scored again with the other input scaling.
    """
    kept: list[ModelOutputs] = []
    factor, _words = alternative_input_scale(spec.model.input.scaling)
    other = rescale_inputs(inputs[:PREPROCESSING_SAMPLES], spec.model.input, factor) if labels is not None else None
    for predict in (predict_fp32, predict_quantized):
        outputs = _as_2d(predict(inputs))
        alternative = _as_2d(predict(other)).argmax(axis=1) if other is not None else None
        kept.append(ModelOutputs(outputs=outputs, alternative_predictions=alternative))
    return diagnose_outputs(
        spec=spec,
        fp32=kept[0],
        quantized=kept[1],
        labels=labels,
        input_stats=InputStats.of(
            inputs, channel_axis=channel_axis(spec.model.input) if np.ndim(inputs) == 4 else None
        ),
        contract=contract,
        calibration_used=calibration_used,
    )


def _hits(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    n = len(predictions)
    hits: np.ndarray = np.asarray(predictions) == np.asarray(labels).ravel()[:n]
    return hits


def _top_class_share(predictions: np.ndarray, classes: int) -> float:
    counts = np.bincount(np.asarray(predictions, dtype=np.int64).ravel(), minlength=max(1, classes))
    return float(counts.max() / max(1, counts.sum()))


def _as_2d(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim != 2 else a
