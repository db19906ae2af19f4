"""spec.ptq on the tflite-int8 path: techniques on the Keras model's float weights before TFLiteConverter runs.

The math is ``edgequant.analysis.post_training`` (pure numpy); this module
finds the layers in the Keras graph and reads and writes their weights:

- bias correction: TFLiteConverter folds each BatchNormalization into the
  convolution before it and quantizes the folded weights symmetrically per
  output channel (Conv2D, DepthwiseConv2D and Dense alike, int8 [-127, 127]).
  Per-channel symmetric quantization commutes with a per-channel factor k_c,
  so the folded layer's weight error is k_c times the unfolded one's and the
  expected output shift ``k_c (W_q - W) E[x]`` is computable without the
  converter: it is subtracted from the BatchNormalization's beta (or from the
  layer's own bias when no BatchNormalization follows). No graph change: the
  model keeps its layers and names, so pinned layers and layer analysis map as
  before.
- adaptive rounding: each Conv2D, DepthwiseConv2D and Dense kernel is rounded
  onto the converter's own per-channel grid by error feedback
  (``post_training.adaptive_rounding``) against the second moment of its input
  patches: one matrix per layer (Conv2D: kh*kw*in patch vectors; Dense: input
  vectors) or one per channel (DepthwiseConv2D: kh*kw taps), measured on the
  calibration data in the same streamed pass as the input means. The same
  commuting argument makes the folded layer's codes the rounded ones (each
  channel's absmax element keeps its float value, so the converter recomputes
  the same scale). Depthwise layers have 9 or 25 taps per channel, so
  round-to-nearest leaves a large output error there; this is where the
  technique pays on EfficientNet-Lite. Bias correction then removes the mean
  shift of the rounded weights against the float ones.
- cross-layer equalization is not applied here: EfficientNet-Lite and
  MobileNet join every pair by ReLU6, which is not scale-equivariant
  (see docs/tflite.md), and per-channel weights leave it little to gain.

The auto rule is the ONNX side's: every ``1 / heldOutFraction``-th calibration
sample is held out, the first candidate is calibrated by the converter on the
rest, the others reuse its ranges with their own weights
(``layers.with_constants_of``: a float conversion, not a second calibration),
and each is scored by top-1 agreement with the float Keras model on the
held-out ones; a technique is kept only when it scores higher than the
converter's own result.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.analysis import post_training as pt
from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches, to_input_contract
from edgequant.backends.tflite import convert as conv
from edgequant.backends.tflite import layers as tl
from edgequant.backends.tflite.predictor import TFLitePredictor
from edgequant.backends.tflite.tf import import_keras, import_tf
from edgequant.util.blas import one_blas_thread

#: TFLite's int8 weights: symmetric, per output channel, [-127, 127].
WEIGHT_QMAX = 127
#: Held-out samples below which the auto choice is not scored (the ONNX side's rule).
MIN_HELD_OUT = 20
#: Samples per forward pass of the input-mean probe (only per-channel means come back).
MEAN_CHUNK = 16
#: Samples per pass when patch second moments are taken too: a depthwise layer's patches are kh*kw times its input,
#: and at 16 samples EfficientNet-Lite0's pass peaked at 4.2 GiB.
MOMENT_CHUNK = 4
_WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense")


def techniques_apply(options: api.PostTraining) -> bool:
    """Whether spec.ptq asks the TFLite path for anything: bias correction and adaptive rounding are what it implements."""
    return options.bias_correction is not api.Technique.OFF or options.adaptive_rounding is not api.Technique.OFF


# --------------------------------------------------------------------------- the Keras graph


@dataclass
class Graph:
    """The model's own graph: each layer's node in it and the layers that consume its output.

    Keras keeps a node for every call of a layer, including the calls that
    built a Sequential model; only the nodes of the model's graph (a
    Sequential's internal functional graph) count here.
    """

    model: Any
    nodes: dict[str, Any]
    """Layer name -> its node, for layers called once in the graph."""
    consumers: dict[str, list[Any]]

    @classmethod
    def of(cls, model: Any) -> Graph:
        graph = getattr(model, "_functional", None) or model
        all_nodes = [n for depth in getattr(graph, "_nodes_by_depth", {}).values() for n in depth]
        calls: dict[str, list[Any]] = {}
        for node in all_nodes:
            calls.setdefault(node.operation.name, []).append(node)
        nodes = {name: found[0] for name, found in calls.items() if len(found) == 1}
        consumers: dict[str, list[Any]] = {name: [] for name in nodes}
        for node in all_nodes:
            for parent in node.parent_nodes:
                if parent.operation.name in consumers:
                    consumers[parent.operation.name].append(node.operation)
        return cls(model=graph, nodes=nodes, consumers=consumers)


def keras_weight_as_onnx(kind: str, kernel: np.ndarray) -> tuple[np.ndarray, int]:
    """A Keras kernel in post_training's layout ([out, in / group, *kernel] / [out, in]) and its group count.

    Conv2D [kh, kw, in, out]; DepthwiseConv2D [kh, kw, in, mult] (output channel in * mult + m); Dense [in, out].
    """
    if kind == "Dense":
        return kernel.T, 1
    if kind == "DepthwiseConv2D":
        kh, kw, channels, mult = kernel.shape
        return kernel.transpose(2, 3, 0, 1).reshape(channels * mult, 1, kh, kw), channels
    return kernel.transpose(3, 2, 0, 1), 1


def output_shift(
    kind: str, kernel: np.ndarray, input_mean: np.ndarray, *, groups: int = 1, float_kernel: np.ndarray | None = None
) -> np.ndarray:
    """E[(W_q - W) x] per output channel of a Keras layer under TFLite's symmetric per-channel int8 weights.

    ``float_kernel`` is W when ``kernel`` is not the float one (adaptively rounded weights already on the grid).
    """
    weight, group = keras_weight_as_onnx(kind, np.asarray(kernel, dtype=np.float32))
    if kind == "Conv2D":
        group = groups
    original = weight if float_kernel is None else keras_weight_as_onnx(kind, np.asarray(float_kernel, np.float32))[0]
    error = pt.quantize_weights_symmetric(weight, qmax=WEIGHT_QMAX, per_channel=True, axis=0) - original
    if kind == "Dense":
        return pt.dense_output_shift(error, input_mean)
    return pt.conv_output_shift(error, input_mean, group=group)


@dataclass(frozen=True)
class BiasTarget:
    """Where a layer's output shift is cancelled: a following BatchNormalization's beta (times its factor) or its own bias."""

    layer: str
    kind: str
    target: str
    """Name of the layer whose bias / beta changes."""
    batch_norm: bool


@dataclass
class Plan:
    targets: list[BiasTarget] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def _is_linear(layer: Any) -> bool:
    activation = getattr(layer, "activation", None)
    return activation is None or getattr(activation, "__name__", "") == "linear"


def plan_bias_correction(model: Any) -> Plan:
    """The weighted layers whose bias (or following BatchNormalization's beta) can take the correction."""
    plan = Plan()
    skipped: dict[str, int] = {}
    graph = Graph.of(model)
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in _WEIGHTED:
            continue
        if layer.name not in graph.nodes or getattr(layer, "data_format", "channels_last") != "channels_last":
            skipped["shared or channels_first"] = skipped.get("shared or channels_first", 0) + 1
            continue
        users = graph.consumers[layer.name]
        follower = users[0] if len(users) == 1 else None
        rank = len(graph.nodes[layer.name].output_tensors[0].shape)
        if (
            follower is not None
            and type(follower).__name__ == "BatchNormalization"
            and _is_linear(layer)
            and follower.center
            and follower.axis in (-1, rank - 1, [-1], [rank - 1])
        ):
            plan.targets.append(BiasTarget(layer.name, kind, follower.name, batch_norm=True))
        elif getattr(layer, "use_bias", False):
            plan.targets.append(BiasTarget(layer.name, kind, layer.name, batch_norm=False))
        else:
            skipped["no bias to correct"] = skipped.get("no bias to correct", 0) + 1
    plan.skipped = skipped
    return plan


@dataclass(frozen=True)
class RoundingTarget:
    """A layer whose kernel adaptive rounding can round: its kind and how its input patches are cut."""

    layer: str
    kind: str
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    padding: str = "VALID"


def plan_adaptive_rounding(model: Any) -> list[RoundingTarget]:
    """Conv2D (one group, no dilation), DepthwiseConv2D (no dilation) and Dense (2-D input) layers called once, NHWC."""
    graph = Graph.of(model)
    targets = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in _WEIGHTED or layer.name not in graph.nodes:
            continue
        if kind == "Dense":
            if len(graph.nodes[layer.name].input_tensors[0].shape) == 2:
                targets.append(RoundingTarget(layer.name, kind))
            continue
        if (
            getattr(layer, "data_format", "channels_last") != "channels_last"
            or tuple(layer.dilation_rate) != (1, 1)
            or getattr(layer, "groups", 1) != 1
        ):
            continue
        kh, kw = layer.kernel_size
        sh, sw = layer.strides
        targets.append(RoundingTarget(layer.name, kind, (kh, kw), (sh, sw), str(layer.padding).upper()))
    return targets


@dataclass
class InputStatistics:
    """Per layer: the per-channel mean of its input and (adaptive rounding's layers) the second moment of its patches."""

    means: dict[str, np.ndarray]
    moments: dict[str, np.ndarray]
    samples: int


def _patch_moment(tf: Any, x: Any, target: RoundingTarget) -> Any:
    """sum p p^T over the input patches one output position reads: [k, k] (Conv2D, Dense), [channels, t, t] (depthwise)."""
    if target.kind == "Dense":
        return tf.matmul(x, x, transpose_a=True)
    kh, kw = target.kernel
    channels = int(x.shape[-1])
    if target.kernel == (1, 1) and target.strides == (1, 1):
        patches = tf.reshape(x, (-1, channels))
    else:
        sh, sw = target.strides
        # extract_patches lays each patch out as (kh, kw, channel), the order of a Keras kernel's first three axes
        patches = tf.image.extract_patches(x, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1], target.padding)
    if target.kind == "DepthwiseConv2D":
        # [channels, taps, positions] then one batched matmul: half the time of the equivalent einsum
        taps = tf.transpose(tf.reshape(patches, (-1, kh * kw, channels)), (2, 1, 0))
        return tf.matmul(taps, taps, transpose_b=True)
    rows = tf.reshape(patches, (-1, kh * kw * channels))
    return tf.matmul(rows, rows, transpose_a=True)


def input_statistics(
    model: Any,
    layer_names: list[str],
    batches: Iterator[np.ndarray],
    *,
    moments: Sequence[RoundingTarget] = (),
    every: int = 1,
    limit: int | None = None,
) -> InputStatistics:
    """One streamed pass: each named layer's per-channel input mean and each target's patch second moment.

    Every ``every``-th sample is measured, at most ``limit`` of them (``tune`` takes
    ``post_training.PATCH_MOMENT_SAMPLES`` spread over the set: patches cost 9-25x an activation, and per-channel
    means of 64 photographs' millions of positions are as good for bias correction as those of 400). The sums are
    taken inside one compiled graph per chunk, so only the [channels] means and the [k, k] moments come back to
    numpy (memory: one chunk's activations and patches inside TensorFlow, never the calibration set's).
    """
    keras = import_keras()
    tf = import_tf()
    graph = Graph.of(model)
    names = list(dict.fromkeys([*layer_names, *(t.layer for t in moments)]))
    tensors = [graph.nodes[name].input_tensors[0] for name in names]
    probe = keras.Model(graph.model.inputs, tensors)
    by_name = {t.layer: t for t in moments}

    @tf.function(reduce_retracing=True)
    def step(x: Any) -> tuple[list[Any], list[Any]]:
        outs = probe(x, training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        sums = [tf.reduce_sum(t, axis=tuple(range(len(t.shape) - 1))) for t in outs]
        squares = [_patch_moment(tf, t, by_name[n]) for n, t in zip(names, outs) if n in by_name]
        return sums, squares

    sums = [np.zeros(int(t.shape[-1]), dtype=np.float64) for t in tensors]
    squares: list[np.ndarray] | None = None
    offered = seen = 0
    chunk = MOMENT_CHUNK if moments else MEAN_CHUNK
    for batch in batches:
        picked = pt.moment_samples_picked(offered, len(batch), every=every, taken=seen, limit=limit)
        offered += len(batch)
        x_all = np.ascontiguousarray(np.asarray(batch)[picked], dtype=np.float32)
        for start in range(0, len(x_all), chunk):
            x = x_all[start : start + chunk]
            chunk_sums, chunk_squares = step(tf.constant(x))
            for i, total in enumerate(chunk_sums):
                sums[i] += np.asarray(total, dtype=np.float64)
            got = [np.asarray(m, dtype=np.float64) for m in chunk_squares]
            squares = got if squares is None else [a + b for a, b in zip(squares, got)]
            seen += len(x)
    if seen == 0:
        raise ValueError("no calibration samples")
    positions = [int(np.prod([int(d) for d in t.shape[1:-1]])) for t in tensors]  # spatial positions per sample
    means = {name: total / (seen * max(1, count)) for name, total, count in zip(names, sums, positions)}
    moment_names = [n for n in names if n in by_name]
    return InputStatistics(
        means={n: means[n] for n in layer_names},
        moments=dict(zip(moment_names, squares or [])),
        samples=seen,
    )


def input_means(model: Any, layer_names: list[str], batches: Iterator[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel mean of each named layer's input over the batches (the probe returns means only: memory of one chunk)."""
    return input_statistics(model, layer_names, batches).means


def rounded_kernel(kind: str, kernel: np.ndarray, moment: np.ndarray) -> np.ndarray:
    """A Keras kernel adaptively rounded onto TFLite's per-output-channel int8 grid, in the kernel's own layout.

    ``moment`` is ``_patch_moment``'s: [kh*kw*in]^2 (Conv2D), [in]^2 (Dense), [in, kh*kw, kh*kw] (depthwise, one
    per input channel, shared by its ``depth_multiplier`` output channels).
    """
    k = np.asarray(kernel, dtype=np.float32)
    if kind == "Dense":
        return pt.adaptive_rounding(k.T, moment, qmax=WEIGHT_QMAX, per_channel=True).T
    if kind == "Conv2D":
        rows = k.reshape(-1, k.shape[-1]).T  # [out, (kh, kw, in)]
        return pt.adaptive_rounding(rows, moment, qmax=WEIGHT_QMAX, per_channel=True).T.reshape(k.shape)
    rows, moments = _depthwise_rows(k, moment)
    return pt.adaptive_rounding_per_channel(rows, moments, qmax=WEIGHT_QMAX).T.reshape(k.shape)


def _depthwise_rows(kernel: np.ndarray, moment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A depthwise kernel [kh, kw, in, mult] as rows [in * mult, taps] (output channel c * mult + m reads input c)
    and each row's input second moment [in * mult, taps, taps]."""
    kh, kw, channels, mult = kernel.shape
    return kernel.reshape(kh * kw, channels * mult).T, np.repeat(moment, mult, axis=0)


def adaptively_rounded(model: Any, targets: list[RoundingTarget], moments: dict[str, np.ndarray]) -> tuple[Any, float]:
    """A copy of ``model`` with each target's kernel rounded by ``rounded_kernel``; returns it and the summed output
    error of the rounded kernels as a share of round-to-nearest's (on the calibration patches)."""
    keras = import_keras()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    ours = nearest = 0.0
    for target in targets:
        layer = clone.get_layer(target.layer)
        weights = layer.get_weights()
        kernel = np.asarray(weights[0], dtype=np.float32)
        weights[0] = rounded_kernel(target.kind, kernel, moments[target.layer])
        layer.set_weights(weights)
        rtn = _round_to_nearest(target.kind, kernel)
        ours += _kernel_output_error(target.kind, kernel, weights[0], moments[target.layer])
        nearest += _kernel_output_error(target.kind, kernel, rtn, moments[target.layer])
    return clone, (ours / nearest if nearest > 0 else 1.0)


def _round_to_nearest(kind: str, kernel: np.ndarray) -> np.ndarray:
    weight, _ = keras_weight_as_onnx(kind, kernel)
    q = pt.quantize_weights_symmetric(weight, qmax=WEIGHT_QMAX, per_channel=True, axis=0)
    if kind == "Dense":
        return q.T
    if kind == "DepthwiseConv2D":
        kh, kw, channels, mult = kernel.shape
        return q.reshape(channels, mult, kh, kw).transpose(2, 3, 0, 1)
    return q.transpose(2, 3, 1, 0)


def _kernel_output_error(kind: str, kernel: np.ndarray, rounded: np.ndarray, moment: np.ndarray) -> float:
    """sum over the calibration patches of ||(rounded - kernel) p||^2."""
    if kind == "Dense":
        return pt.output_error(kernel.T, rounded.T, moment)
    if kind == "Conv2D":
        return pt.output_error(kernel.reshape(-1, kernel.shape[-1]).T, rounded.reshape(-1, kernel.shape[-1]).T, moment)
    rows, moments = _depthwise_rows(kernel, moment)
    return pt.output_error_per_channel(rows, _depthwise_rows(rounded, moment)[0], moments)


def bias_corrected(
    model: Any, plan: Plan, means: dict[str, np.ndarray], *, float_model: Any | None = None
) -> tuple[Any, int]:
    """A copy of ``model`` with each planned bias (or beta) minus its layer's expected output shift; returns it and the count.

    ``float_model``: the model whose kernels the shift is measured against, when ``model``'s are already rounded.
    """
    keras = import_keras()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    changed = 0
    for target in plan.targets:
        layer = clone.get_layer(target.layer)
        weights = layer.get_weights()
        original = None if float_model is None else float_model.get_layer(target.layer).get_weights()[0]
        shift = output_shift(
            target.kind,
            weights[0],
            means[target.layer],
            groups=getattr(layer, "groups", 1),
            float_kernel=original,
        )
        owner = clone.get_layer(target.target)
        if target.batch_norm:
            # folded weights are k_c * W: their quantization error, and so the shift, is k_c times W's
            gamma = np.asarray(owner.gamma.numpy() if owner.scale else np.ones_like(shift), dtype=np.float64)
            factor = gamma / np.sqrt(np.asarray(owner.moving_variance.numpy(), dtype=np.float64) + owner.epsilon)
            owner.beta.assign(pt.corrected_bias(owner.beta.numpy(), factor * shift))
        else:
            owner.bias.assign(pt.corrected_bias(owner.bias.numpy(), shift))
        changed += 1
    return clone, changed


# --------------------------------------------------------------------------- the held-out split and scoring


def calibrate(model: Any, data: Batches) -> bytes:
    """The converter's calibrated model (float graph with recorded ranges) of a Keras model on ``data``."""
    tf_lite = import_tf().lite
    converter = tf_lite.TFLiteConverter.from_keras_model(model)
    conv.configure(converter, method=api.Method.TFLITE_INT8, representative=conv.representative_from(data))
    with contextlib.redirect_stdout(io.StringIO()):
        return tl.calibrate(converter)


def recalibrated(calibrated: bytes, model: Any, data: Batches, log: Callable[[str], None]) -> bytes:
    """``model``'s calibrated model, reusing the ranges of ``calibrated`` (another weight variant of the same graph).

    The float conversion takes seconds where a calibration takes minutes; when the two graphs do not line up
    (``layers.with_constants_of``), the model is calibrated on ``data`` after all.
    """
    float_model = conv.run_converter(import_tf().lite.TFLiteConverter.from_keras_model(model), None)
    moved = tl.with_constants_of(calibrated, float_model)
    if moved is not None:
        return moved
    log("ptq: the weight variant converts to another graph than the first candidate: calibrating it on its own")
    return calibrate(model, data)


def float_logits(model: Any, x: np.ndarray) -> np.ndarray:
    """The float Keras model's outputs, the reference every candidate is scored against."""
    outs = [np.asarray(model.predict_on_batch(x[i : i + MEAN_CHUNK])) for i in range(0, len(x), MEAN_CHUNK)]
    return np.concatenate(outs).reshape(len(x), -1)


def int8_logits(calibrated: bytes, x: np.ndarray, workdir: Path) -> np.ndarray:
    """Outputs of the full-INT8 model (uint8 I/O, as shipped) quantized from ``calibrated``."""
    path = workdir / "candidate.int8.tflite"
    path.write_bytes(tl.quantize_calibrated(calibrated, io_dtype="uint8"))
    predictor = TFLitePredictor(path)
    return np.concatenate(
        [predictor.predict(to_input_contract(x[i : i + 50], predictor.input)) for i in range(0, len(x), 50)]
    )


@dataclass
class Tuned:
    """The calibrated model spec.ptq chose, the Keras model it came from, and what the report says."""

    calibrated: bytes
    keras_model: Any
    notes: list[str]
    scores: list[pt.Score]


@dataclass(frozen=True)
class Candidate:
    """One weight variant the held-out split scores: which techniques it applies."""

    rounding: bool
    correction: bool

    @property
    def name(self) -> str:
        parts = [p for p, on in (("adaptive rounding", self.rounding), ("bias correction", self.correction)) if on]
        return " + ".join(parts) or "converter"


def candidates_for(options: api.PostTraining) -> list[Candidate]:
    """The variants to score, in the greedy order (the converter first, so it wins ties); one when nothing is auto.

    ``on`` puts a technique in every candidate, ``off`` in none, ``auto`` tries it both ways (adaptive rounding
    only together with bias correction when that is not off: rounding moves each channel's mean, which the
    correction then removes).
    """
    correction = options.bias_correction
    rounding = options.adaptive_rounding
    if api.Technique.AUTO not in (correction, rounding):
        return [Candidate(rounding is api.Technique.ON, correction is api.Technique.ON)]
    found: list[Candidate] = []
    for r, c in ((False, False), (False, True), (True, correction is not api.Technique.OFF)):
        if (rounding is api.Technique.ON and not r) or (rounding is api.Technique.OFF and r):
            continue
        if (correction is api.Technique.ON and not c) or (correction is api.Technique.OFF and c):
            continue
        if Candidate(r, c) not in found:
            found.append(Candidate(r, c))
    return found


def tune(
    *, model: Any, calibration: Batches, options: api.PostTraining, workdir: Path, log: Callable[[str], None]
) -> Tuned | None:
    """Apply spec.ptq's techniques to a Keras model; None when there is nothing to do (the caller calibrates as before)."""
    if not techniques_apply(options):
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    plan = plan_bias_correction(model)
    rounding_targets = plan_adaptive_rounding(model) if options.adaptive_rounding is not api.Technique.OFF else []
    if options.bias_correction is api.Technique.OFF:
        plan = Plan(skipped=plan.skipped)
    skipped = "".join(f"; {n} layers skipped ({why})" for why, n in plan.skipped.items())
    if not plan.targets and not rounding_targets:
        return Tuned(
            calibrated=calibrate(model, calibration),
            keras_model=model,
            notes=[f"ptq: bias correction and adaptive rounding found no layer to change{skipped}"],
            scores=[],
        )
    candidates = candidates_for(options)
    every = max(2, round(1 / options.held_out_fraction))
    scored = len(candidates) > 1
    if scored and calibration.count // every < MIN_HELD_OUT:
        return Tuned(
            calibrated=calibrate(model, calibration),
            keras_model=model,
            notes=[
                f"ptq: {calibration.count} calibration samples are too few to hold out {options.held_out_fraction:g} "
                f"for scoring ({MIN_HELD_OUT} needed): bias correction and adaptive rounding off"
            ],
            scores=[],
        )
    fit, held = calibration.held_out(every=every) if scored else (calibration, None)

    def fit_inputs() -> Iterator[np.ndarray]:
        return (x for x, _ in fit)

    wants_rounding = any(c.rounding for c in candidates) and bool(rounding_targets)
    every = pt.moment_sample_stride(fit.count)
    measured = min(pt.PATCH_MOMENT_SAMPLES, -(-fit.count // every))
    log(
        f"ptq: measuring the inputs of {len(plan.targets)} layers"
        + (f" (patch second moments of {len(rounding_targets)})" if wants_rounding else "")
        + f" on {measured} of the {fit.count} calibration samples"
    )
    stats = input_statistics(
        model,
        [t.layer for t in plan.targets],
        fit_inputs(),
        moments=rounding_targets if wants_rounding else [],
        every=every,
        limit=pt.PATCH_MOMENT_SAMPLES,
    )
    with one_blas_thread():
        rounded, error_share = (
            adaptively_rounded(model, rounding_targets, stats.moments) if wants_rounding else (model, 1.0)
        )
    described: dict[str, str] = {}
    built: dict[Candidate, Any] = {}
    for candidate in candidates:
        base = rounded if candidate.rounding else model
        if candidate.correction and plan.targets:
            built[candidate], changed = bias_corrected(
                base, plan, stats.means, float_model=model if candidate.rounding else None
            )
        else:
            built[candidate], changed = base, 0
        what = []
        if candidate.rounding:
            what.append(
                f"adaptive rounding on {len(rounding_targets)} Conv/DepthwiseConv/Dense kernels "
                f"(output error {error_share:.2f}x round-to-nearest's on the calibration inputs)"
            )
        if candidate.correction:
            what.append(f"bias correction applied to {changed} Conv/DepthwiseConv/Dense layers{skipped}")
        described[candidate.name] = "; ".join(what)
    if held is None:
        (only,) = candidates
        log(f"ptq: calibrating the '{only.name}' model")
        return Tuned(
            calibrated=calibrate(built[only], fit),
            keras_model=built[only],
            notes=[f"ptq: {described[only.name]}"] if described[only.name] else [],
            scores=[],
        )
    reference = float_logits(model, held)
    scores: list[pt.Score] = []
    results: list[tuple[pt.Score, bytes, Any]] = []
    first: bytes | None = None
    for candidate in candidates:
        if first is None:
            log(f"ptq: calibrating candidate '{candidate.name}' on {fit.count} samples")
            calibrated = first = calibrate(built[candidate], fit)
        else:
            log(f"ptq: candidate '{candidate.name}': its weights in the first candidate's calibration")
            calibrated = recalibrated(first, built[candidate], fit, log)
        logits = int8_logits(calibrated, held, workdir)
        score = pt.Score(
            name=candidate.name,
            agreement=pt.top1_agreement(reference, logits),
            sqnr_db=pt.sqnr_db(reference, logits),
            samples=len(reference),
        )
        log(f"ptq candidate {candidate.name}: held-out agreement {score.agreement:.3f}, SQNR {score.sqnr_db:.1f} dB")
        scores.append(score)
        results.append((score, calibrated, built[candidate]))
    best = pt.best_candidate(scores)
    _score, calibrated, chosen = next(r for r in results if r[0] is best)
    shown = ", ".join(f"{s.name} {s.agreement:.3f} ({s.sqnr_db:.1f} dB)" for s in scores)
    notes = [
        f"ptq: held-out top-1 agreement with FP32 on {len(held)} calibration samples (SQNR): {shown}; "
        f"chosen: {best.name} (ranges from the other {fit.count}, calibrated once on the '{candidates[0].name}' weights)",
    ]
    if described.get(best.name):
        notes.append(f"ptq: {described[best.name]}")
    if best.name == "converter":
        tried = " and ".join(c.name for c in candidates[1:])
        notes.append(f"ptq: {tried} not kept: no gain on the held-out split")
    return Tuned(calibrated=calibrated, keras_model=chosen, notes=notes, scores=scores)
