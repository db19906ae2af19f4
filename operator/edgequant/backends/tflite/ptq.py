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
- cross-layer equalization is not applied here: EfficientNet-Lite and
  MobileNet join every pair by ReLU6, which is not scale-equivariant
  (see docs/tflite.md), and per-channel weights leave it little to gain.

The auto rule is the ONNX side's: every ``1 / heldOutFraction``-th calibration
sample is held out, each candidate is calibrated by the converter on the rest
and scored by top-1 agreement with the float Keras model on the held-out ones;
a technique is kept only when it scores higher than the converter's own result.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
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

#: TFLite's int8 weights: symmetric, per output channel, [-127, 127].
WEIGHT_QMAX = 127
#: Held-out samples below which the auto choice is not scored (the ONNX side's rule).
MIN_HELD_OUT = 20
#: Samples per forward pass of the input-mean probe (only per-channel means come back).
MEAN_CHUNK = 16
_WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense")


def techniques_apply(options: api.PostTraining) -> bool:
    """Whether spec.ptq asks the TFLite path for anything: bias correction is what it implements."""
    return options.bias_correction is not api.Technique.OFF


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


def output_shift(kind: str, kernel: np.ndarray, input_mean: np.ndarray, *, groups: int = 1) -> np.ndarray:
    """E[(W_q - W) x] per output channel of a Keras layer under TFLite's symmetric per-channel int8 weights."""
    weight, group = keras_weight_as_onnx(kind, np.asarray(kernel, dtype=np.float32))
    if kind == "Conv2D":
        group = groups
    error = pt.quantize_weights_symmetric(weight, qmax=WEIGHT_QMAX, per_channel=True, axis=0) - weight
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


def input_means(model: Any, layer_names: list[str], batches: Iterator[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel mean of each named layer's input over the batches (the probe returns means only: memory of one chunk)."""
    keras = import_keras()
    graph = Graph.of(model)
    tensors = [graph.nodes[name].input_tensors[0] for name in layer_names]
    means = [keras.ops.mean(t, axis=tuple(range(1, len(t.shape) - 1))) if len(t.shape) > 2 else t for t in tensors]
    probe = keras.Model(graph.model.inputs, means)
    sums = [np.zeros(int(t.shape[-1]), dtype=np.float64) for t in tensors]
    seen = 0
    for batch in batches:
        for start in range(0, len(batch), MEAN_CHUNK):
            x = np.ascontiguousarray(batch[start : start + MEAN_CHUNK], dtype=np.float32)
            outs = probe.predict_on_batch(x)  # a compiled call: eager op-by-op is several times slower
            outs = outs if isinstance(outs, list | tuple) else [outs]
            for i, out in enumerate(outs):
                sums[i] += np.asarray(out, dtype=np.float64).sum(axis=0)
            seen += len(x)
    if seen == 0:
        raise ValueError("no calibration samples")
    return {name: total / seen for name, total in zip(layer_names, sums)}


def bias_corrected(model: Any, plan: Plan, means: dict[str, np.ndarray]) -> tuple[Any, int]:
    """A copy of ``model`` with each planned bias (or beta) minus its layer's expected output shift; returns it and the count."""
    keras = import_keras()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    changed = 0
    for target in plan.targets:
        layer = clone.get_layer(target.layer)
        weights = layer.get_weights()
        shift = output_shift(target.kind, weights[0], means[target.layer], groups=getattr(layer, "groups", 1))
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


def tune(
    *, model: Any, calibration: Batches, options: api.PostTraining, workdir: Path, log: Callable[[str], None]
) -> Tuned | None:
    """Apply spec.ptq's techniques to a Keras model; None when there is nothing to do (the caller calibrates as before)."""
    if not techniques_apply(options):
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    plan = plan_bias_correction(model)
    skipped = "".join(f"; {n} layers skipped ({why})" for why, n in plan.skipped.items())
    if not plan.targets:
        return Tuned(
            calibrated=calibrate(model, calibration),
            keras_model=model,
            notes=[f"ptq: bias correction found no layer to correct{skipped}"],
            scores=[],
        )
    every = max(2, round(1 / options.held_out_fraction))
    auto = options.bias_correction is api.Technique.AUTO
    if auto and calibration.count // every < MIN_HELD_OUT:
        return Tuned(
            calibrated=calibrate(model, calibration),
            keras_model=model,
            notes=[
                f"ptq: {calibration.count} calibration samples are too few to hold out {options.held_out_fraction:g} "
                f"for scoring ({MIN_HELD_OUT} needed): bias correction off"
            ],
            scores=[],
        )
    fit, held = calibration.held_out(every=every) if auto else (calibration, None)

    def fit_inputs() -> Iterator[np.ndarray]:
        return (x for x, _ in fit)

    log(f"ptq: measuring the input means of {len(plan.targets)} layers on {fit.count} calibration samples")
    means = input_means(model, [t.layer for t in plan.targets], fit_inputs())
    corrected, changed = bias_corrected(model, plan, means)
    what = f"bias correction applied to {changed} Conv/DepthwiseConv/Dense layers{skipped}"
    if held is None:
        log("ptq: calibrating the bias-corrected model")
        return Tuned(calibrated=calibrate(corrected, fit), keras_model=corrected, notes=[f"ptq: {what}"], scores=[])
    reference = float_logits(model, held)
    scores: list[pt.Score] = []
    results: list[tuple[pt.Score, bytes, Any]] = []
    for name, candidate in (("converter", model), ("bias correction", corrected)):
        log(f"ptq: calibrating candidate '{name}' on {fit.count} samples")
        calibrated = calibrate(candidate, fit)
        logits = int8_logits(calibrated, held, workdir)
        score = pt.Score(
            name=name,
            agreement=pt.top1_agreement(reference, logits),
            sqnr_db=pt.sqnr_db(reference, logits),
            samples=len(reference),
        )
        log(f"ptq candidate {name}: held-out agreement {score.agreement:.3f}, SQNR {score.sqnr_db:.1f} dB")
        scores.append(score)
        results.append((score, calibrated, candidate))
    best = pt.best_candidate(scores)
    _score, calibrated, chosen = next(r for r in results if r[0] is best)
    shown = ", ".join(f"{s.name} {s.agreement:.3f} ({s.sqnr_db:.1f} dB)" for s in scores)
    notes = [
        f"ptq: held-out top-1 agreement with FP32 on {len(held)} calibration samples (SQNR): {shown}; "
        f"chosen: {best.name} (ranges from the other {fit.count})",
        f"ptq: {what}"
        if best.name != "converter"
        else f"ptq: bias correction ({changed} layers) not kept: no gain on the held-out split",
    ]
    return Tuned(calibrated=calibrated, keras_model=chosen, notes=notes, scores=scores)
