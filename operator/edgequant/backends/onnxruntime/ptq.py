"""Post-training techniques on an ONNX float model before ONNX Runtime's quantize_static (graph plumbing only).

The math is ``edgequant.analysis.post_training`` (pure numpy); this module
finds the layers in the graph, reads and writes their initializers, and
collects what the math needs in one pass over the calibration data:

- ``equalizable_pairs`` / ``equalize_model``: cross-layer equalization of
  Conv -> [Relu] -> Conv pairs (BatchNorm already folded by pre-processing);
- ``collect_statistics``: histograms of every tensor quantize_static
  calibrates (zero-anchored, merged batch by batch; only the extremes of those
  whose range it replaces by their Relu/Clip's, ``ranges_replaced``) plus the
  per-channel mean of every weighted layer's input, one session run per batch;
- ``correct_biases``: each Conv/Gemm bias minus the mean output shift its
  quantized weights cause;
- ``ranges_by``: activation ranges per algorithm (minmax, entropy,
  percentile, mse) from the same histograms, as ORT's ``TensorsData``;
- ``roundable_layers`` / ``round_weights_adaptively``: 1x1 convolutions, Gemm
  layers, depthwise convolutions and narrow (RGB stem) convolutions whose
  weights are rounded onto the converter's int8 grid by error feedback on
  their inputs' second moments (``adaptiveRounding``; per channel over input
  patches for depthwise ones), collected in the same statistics pass;
- ``narrow_layers``: the convolutions with so few weights per output channel
  (depthwise, RGB stem) that int8 rounding costs the most; they get int16
  weights (``sixteenBitWeights``) for a few percent of the model's size, and
  ``narrow_activations`` the tensors around them 16-bit activations
  (``sixteenBitActivations``); both only under an agreement budget, as they
  cost speed.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import TensorsData
from onnxruntime.quantization import load_tensors_data as load_ranges
from onnxruntime.quantization.calibrate import TensorData

from edgequant.analysis import post_training as pt
from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches
from edgequant.backends.onnxruntime.calibration import CALIBRATED_OPS, ORT_METHOD, model_batches
from edgequant.backends.onnxruntime.model import activation_bytes_per_sample
from edgequant.backends.onnxruntime.options import StaticSettings
from edgequant.backends.onnxruntime.predictor import OrtPredictor, session
from edgequant.backends.onnxruntime.quantize import FloatModel, QdqTemplate, quantize_qdq, save_ranges
from edgequant.util.blas import one_blas_thread
from edgequant.util.memory import DEFAULT_BUDGET_BYTES, probe_batch_size

#: Activations between two convolutions that commute with a positive per-channel scale.
SCALE_EQUIVARIANT = frozenset({"Relu"})
#: Bins of the calibration histograms (zero-anchored, see HistogramAccumulator): fine enough for the MSE search.
HISTOGRAM_BINS = 4096
#: The KL (entropy) search: histogram merged to this many bins, ORT's default 128 quantized bins.
ENTROPY_BINS = 512
ENTROPY_QUANTIZED_BINS = 128
_MEAN_SUFFIX = "/edgequant_channel_mean"
#: Most weights per output channel of a layer sixteenBitWeights widens: a 3x3 RGB stem (27), a 5x5 depthwise (25), a 3x3 one (9).
NARROW_FAN_IN = 27
#: Most samples per session run of the statistics pass (all calibrated tensors of a run are in memory at once);
#: fewer when the memory budget asks (``statistics_chunk``).
STATISTICS_CHUNK = 8


# --------------------------------------------------------------------------- graph facts


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


@dataclass(frozen=True)
class PairSearch:
    """The Conv pairs cross-layer equalization can rescale exactly, and those it skipped with the reason."""

    pairs: list[tuple[str, str]]
    skipped: dict[str, int] = field(default_factory=dict)


def equalizable_pairs(model: onnx.ModelProto) -> PairSearch:
    """Conv -> [Relu] -> Conv chains whose tensors have no other user and whose weights are initializers of their own.

    A Clip (ReLU6) between them is not scale-equivariant: such pairs are skipped (counted as ``clip``).
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    users = _consumers(graph)
    outputs = {o.name for o in graph.output}

    def own_weight(node: onnx.NodeProto) -> bool:
        return (
            len(node.input) > 1
            and node.input[1] in inits
            and len(users[node.input[1]]) == 1
            and (
                len(node.input) < 3 or not node.input[2] or (node.input[2] in inits and len(users[node.input[2]]) == 1)
            )
        )

    pairs: list[tuple[str, str]] = []
    skipped: dict[str, int] = defaultdict(int)
    for first in graph.node:
        if (
            first.op_type != "Conv"
            or not first.name
            or not own_weight(first)
            or (_attr(first, "group", 1) != 1 and not _is_depthwise(first, inits))
        ):
            continue
        tensor = first.output[0]
        between = None
        if tensor in outputs or len(users[tensor]) != 1:
            continue
        nxt = users[tensor][0]
        if nxt.op_type != "Conv":
            if nxt.op_type in SCALE_EQUIVARIANT:
                between = nxt
            elif nxt.op_type == "Clip":
                skipped["clip"] += 1
                continue
            else:
                continue
            if between.output[0] in outputs or len(users[between.output[0]]) != 1:
                continue
            nxt = users[between.output[0]][0]
            if nxt.op_type != "Conv":
                continue
        if not nxt.name or not own_weight(nxt) or nxt.input[0] != (between.output[0] if between else tensor):
            continue
        channels = numpy_helper.to_array(inits[first.input[1]]).shape[0]
        w2 = inits[nxt.input[1]]
        group = _attr(nxt, "group", 1)
        if not (group == 1 and w2.dims[1] == channels) and not (
            group == channels and w2.dims[0] == channels and w2.dims[1] == 1
        ):
            skipped["grouped"] += 1
            continue
        pairs.append((first.name, nxt.name))
    return PairSearch(pairs=pairs, skipped=dict(skipped))


def _is_depthwise(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    weight = inits[node.input[1]]
    return _attr(node, "group", 1) == weight.dims[0] and weight.dims[1] == 1


def equalize_model(source: Path, target: Path) -> tuple[Path, PairSearch]:
    """``source`` with its equalizable Conv pairs rescaled (the float function unchanged), saved as ``target``."""
    model = onnx.load(str(source))
    search = equalizable_pairs(model)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    names = sorted({name for pair in search.pairs for name in pair})
    layers: dict[str, pt.ConvWeights] = {}
    for name in names:
        node = nodes[name]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        layers[name] = pt.ConvWeights(
            weight=numpy_helper.to_array(inits[node.input[1]]).copy(),
            bias=numpy_helper.to_array(inits[bias]).copy() if bias else None,
            depthwise=_is_depthwise(node, inits),
        )
    pt.equalize_pairs(layers, search.pairs)
    for name, layer in layers.items():
        node = nodes[name]
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(layer.weight, node.input[1]))
        if layer.bias is not None:
            inits[node.input[2]].CopyFrom(numpy_helper.from_array(layer.bias, node.input[2]))
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target, search


def narrow_layers(model: onnx.ModelProto, *, max_fan_in: int = NARROW_FAN_IN) -> list[onnx.NodeProto]:
    """Named Conv nodes with an initializer weight of at most ``max_fan_in`` weights per output channel."""
    inits = {t.name: t for t in model.graph.initializer}
    return [
        n
        for n in model.graph.node
        if n.op_type == "Conv"
        and n.name
        and len(n.input) > 1
        and n.input[1] in inits
        and len(inits[n.input[1]].dims) > 1
        and int(np.prod(inits[n.input[1]].dims[1:])) <= max_fan_in
    ]


#: Activations that follow a convolution elementwise: their output is quantized with the convolution's output.
ELEMENTWISE_ACTIVATIONS = frozenset({"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu"})


def narrow_activations(model: onnx.ModelProto, narrow: Iterable[onnx.NodeProto]) -> tuple[str, ...]:
    """The activation tensors around the ``narrow`` convolutions: each one's input, its output and, where its only
    consumer is an elementwise activation (ReLU6 after a depthwise conv), that activation's output. These are the
    tensors whose 8-bit steps cost a depthwise-separable network the most agreement once its weights are 16-bit."""
    consumers = _consumers(model.graph)
    initializers = {t.name for t in model.graph.initializer}
    tensors: list[str] = []
    for node in narrow:
        tensors.append(node.input[0])
        tensors.append(node.output[0])
        after = consumers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type in ELEMENTWISE_ACTIVATIONS:
            tensors.append(after[0].output[0])
    return tuple(t for t in dict.fromkeys(tensors) if t and t not in initializers)


def weight_count(model: onnx.ModelProto, names: Iterable[str]) -> int:
    """Elements of the named initializers."""
    inits = {t.name: t for t in model.graph.initializer}
    return sum(int(np.prod(inits[n].dims)) for n in names if n in inits)


# --------------------------------------------------------------------------- one statistics pass


def _weighted_layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Conv and Gemm (transA 0) nodes with an initializer weight: the layers bias correction adjusts."""
    inits = {t.name for t in model.graph.initializer}
    return [
        n
        for n in model.graph.node
        if n.name
        and len(n.input) > 1
        and n.input[1] in inits
        and (n.op_type == "Conv" or (n.op_type == "Gemm" and _attr(n, "transA", 0) == 0))
    ]


def calibrated_tensors(model: onnx.ModelProto) -> list[str]:
    """The float tensors quantize_static calibrates (ORT's rule: inputs/outputs of its quantizable op types with a known float type)."""
    graph = model.graph
    infos = {vi.name: vi for vi in (*graph.value_info, *graph.output, *graph.input)}
    inits = {t.name for t in graph.initializer}
    chosen: dict[str, None] = {}
    for node in graph.node:
        if node.op_type not in CALIBRATED_OPS:
            continue
        for name in (*node.input, *node.output):
            vi = infos.get(name)
            if (
                vi is not None
                and name not in inits
                and vi.type.HasField("tensor_type")
                and vi.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
            ):
                chosen[name] = None
    return list(chosen)


def ranges_replaced(model: onnx.ModelProto) -> set[str]:
    """Calibrated tensors whose range quantize_static replaces by the next tensor's (``adjust_tensor_ranges``): the
    input of a Relu or Clip that is its only reader, when the output is calibrated too (a convolution's output before
    its ReLU6). Their own range is never used (unless that Relu/Clip node itself is kept in float), so the statistics
    pass keeps only their extremes, no histogram: on EfficientNet-Lite0 a third of the values it would bin."""
    calibrated = set(calibrated_tensors(model))
    readers = _consumers(model.graph)
    return {
        node.input[0]
        for node in model.graph.node
        if node.op_type in ("Clip", "Relu")
        and node.input[0] in calibrated
        and node.output[0] in calibrated
        and len(readers[node.input[0]]) == 1
    }


@dataclass
class Statistics:
    """What one pass over the calibration data yields for one float model."""

    histograms: dict[str, pt.Histogram]
    input_means: dict[str, np.ndarray]
    """Per-channel mean of each weighted layer's input, by node name."""
    samples: int
    second_moments: dict[str, pt.SecondMoment | pt.ChannelSecondMoments] = field(default_factory=dict)
    """sum x x^T of each roundable layer's input vectors (patches for convolutions with a kernel; per channel for
    depthwise ones), by node name (only when asked for)."""
    equalized: Statistics | None = None
    """The same for what cross-layer equalization changes, in the equalized model (only when asked for)."""
    extremes: dict[str, tuple[float, float]] = field(default_factory=dict)
    """(minimum, maximum) of the calibrated tensors without a histogram (``ranges_replaced``)."""


def statistics_fixed_bytes(model: onnx.ModelProto, *, second_moments: bool) -> int:
    """Bytes the statistics pass holds whatever the batch size: one histogram per calibrated tensor and, when adaptive
    rounding asks for them, each roundable layer's in x in second moment (float64; 13 MiB for a 1280-wide classifier)."""
    inits = {t.name: t for t in model.graph.initializer}
    binned = len(calibrated_tensors(model)) - len(ranges_replaced(model))
    histograms = binned * HISTOGRAM_BINS * np.dtype(np.int64).itemsize
    if not second_moments:
        return histograms
    return histograms + sum(_moment_bytes(node, inits) for node in roundable_layers(model).values())


def statistics_chunk(*, budget_bytes: int, fixed_bytes: int, bytes_per_sample: int | None) -> int:
    """Samples per session run of the statistics pass: what the budget left after the fixed statistics allows, at
    most ``STATISTICS_CHUNK`` (None per sample: shapes unknown, the default)."""
    if bytes_per_sample is None:
        return STATISTICS_CHUNK
    left = max(budget_bytes - fixed_bytes, 0)
    return min(STATISTICS_CHUNK, probe_batch_size(budget_bytes=left, bytes_per_sample=bytes_per_sample))


def collect_statistics(
    model_path: Path,
    batches: Iterable[np.ndarray],
    *,
    input_name: str,
    workdir: Path,
    fixed_batch: int | None = None,
    second_moments: bool = False,
    chunk: int = STATISTICS_CHUNK,
    equalized: tuple[Path, Sequence[tuple[str, str]]] | None = None,
    moment_every: int = 1,
) -> Statistics:
    """Histograms of the calibrated tensors and per-channel input means of the weighted layers, batch by batch (memory: one batch).

    ``second_moments``: also sum x x^T of every ``roundable_layers`` input (in x in per layer, never the inputs): a
    1x1 layer's on every sample (the pass runs them all for the histograms anyway, and its rows cost one matmul), a
    kernel's patches on every ``moment_every``-th sample, at most ``post_training.PATCH_MOMENT_SAMPLES`` of them.
    ``equalized``: (the model equalized, its pairs): also, in the same session runs, the statistics of what
    equalization changes (``equalized_tensors``), as ``Statistics.equalized``: the equalized model's nodes that produce
    them run beside the source's on the same inputs (see ``equalized_statistics``).
    """
    model = onnx.load(str(model_path))
    inits = {t.name: t for t in model.graph.initializer}
    calibrated = calibrated_tensors(model)
    weighted = _weighted_layers(model)
    roundable = roundable_layers(model) if second_moments else {}
    replaced = ranges_replaced(model)
    views = [
        _StatisticsView(
            histograms={t: t for t in calibrated if t not in replaced},
            means=weighted,
            roundable=roundable,
            renamed={},
            extremes={t: t for t in calibrated if t in replaced},
        )
    ]
    if equalized is not None:
        equalized_model = onnx.load(str(equalized[0]))
        changed, readers = equalized_tensors(equalized_model, equalized[1])
        renamed = _add_equalized_nodes(model.graph, equalized_model, changed)
        views.append(
            _StatisticsView(
                histograms={t: renamed[t] for t in calibrated if t in changed and t not in replaced},
                means=[n for n in weighted if n.name in readers],
                roundable={name: node for name, node in roundable.items() if name in readers},
                renamed=renamed,
                extremes={t: renamed[t] for t in calibrated if t in changed and t in replaced},
            )
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    graph = model.graph
    existing = {o.name for o in graph.output}

    def output(name: str) -> None:
        if name not in existing:
            graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            existing.add(name)

    for view in views:
        for tensor in (*view.histograms.values(), *view.extremes.values()):
            output(tensor)
        for node in view.means:
            rank = len(inits[node.input[1]].dims) if node.op_type == "Conv" else 2
            axes = [0, *range(2, rank)]
            source, out = view.input_of(node), view.mean_of(node)
            if out not in existing:
                if opset >= 18:
                    axes_name = out + "/axes"
                    graph.initializer.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), axes_name))
                    graph.node.append(helper.make_node("ReduceMean", [source, axes_name], [out], keepdims=0, name=out))
                else:
                    graph.node.append(helper.make_node("ReduceMean", [source], [out], axes=axes, keepdims=0, name=out))
                output(out)
        for node in view.roundable.values():
            output(view.input_of(node))
    workdir.mkdir(parents=True, exist_ok=True)
    augmented = workdir / "statistics.onnx"
    onnx.save(model, str(augmented))
    sess = session(augmented)
    names = [o.name for o in sess.get_outputs()]
    accumulators = [{name: pt.HistogramAccumulator(HISTOGRAM_BINS) for name in view.histograms} for view in views]
    extremes = [{name: pt.Extremes() for name in view.extremes} for view in views]
    moments = [{name: _second_moment(node, inits) for name, node in view.roundable.items()} for view in views]
    sums: list[dict[str, np.ndarray]] = [{} for _ in views]
    samples = moment_samples = 0
    with one_blas_thread():
        for batch in batches:
            # every calibrated tensor of a batch comes back at once: small pieces keep that bounded (fixed-batch models excepted)
            step = len(batch) if fixed_batch else chunk
            for start in range(0, len(batch), step):
                x = np.ascontiguousarray(batch[start : start + step])
                values = dict(zip(names, sess.run(None, {input_name: x})))
                picked = pt.moment_samples_picked(
                    samples, len(x), every=moment_every, taken=moment_samples, limit=pt.PATCH_MOMENT_SAMPLES
                )
                for view, histograms, ranges, layer_moments, layer_sums in zip(
                    views, accumulators, extremes, moments, sums
                ):
                    for name, tensor in view.histograms.items():
                        histograms[name].add(values[tensor])
                    for name, tensor in view.extremes.items():
                        ranges[name].add(values[tensor])
                    for node in view.means:
                        mean = values[view.mean_of(node)].astype(np.float64) * len(x)
                        layer_sums[node.name] = layer_sums.get(node.name, 0) + mean
                    for name, node in view.roundable.items():
                        if not _has_kernel(node, inits):
                            layer_moments[name].add(_input_rows(node, values[view.input_of(node)]))
                        elif picked.any():
                            _add_patch_moment(layer_moments[name], node, inits, values[view.input_of(node)][picked])
                moment_samples += int(picked.sum())
                samples += len(x)
                del values
    if samples == 0:
        raise ValueError("no calibration batches")
    results = [
        Statistics(
            histograms={name: acc.histogram() for name, acc in histograms.items() if acc.has_values},
            input_means={k: v / samples for k, v in layer_sums.items()},
            samples=samples,
            second_moments=layer_moments,
            extremes={name: r.bounds() for name, r in ranges.items() if r.has_values},
        )
        for histograms, ranges, layer_moments, layer_sums in zip(accumulators, extremes, moments, sums)
    ]
    if equalized is not None:
        results[0].equalized = results[1]
    return results[0]


@dataclass(frozen=True)
class _StatisticsView:
    """One model's statistics in the augmented graph: the graph tensor of each histogram (by its name in that model),
    the layers whose input means and second moments it takes, and the tensors it reads under another name."""

    histograms: dict[str, str]
    means: list[onnx.NodeProto]
    roundable: dict[str, onnx.NodeProto]
    renamed: dict[str, str]
    extremes: dict[str, str] = field(default_factory=dict)
    """The graph tensor of each tensor whose extremes alone it takes (``ranges_replaced``)."""

    def input_of(self, node: onnx.NodeProto) -> str:
        return self.renamed.get(node.input[0], node.input[0])

    def mean_of(self, node: onnx.NodeProto) -> str:
        """The graph output of ``node``'s per-channel input mean."""
        return node.name + _MEAN_SUFFIX + (_EQUALIZED_SUFFIX if node.input[0] in self.renamed else "")


#: Names of the equalized model's nodes, initializers and tensors added beside the source's in the statistics graph.
_EQUALIZED_SUFFIX = "/edgequant_equalized"


def _add_equalized_nodes(
    graph: onnx.GraphProto, equalized: onnx.ModelProto, tensors: Collection[str]
) -> dict[str, str]:
    """Adds to ``graph`` (the source model's) the ``equalized`` model's nodes that produce ``tensors``, with their
    equalized initializers, reading the source's tensors where equalization left them alone and each other's outputs
    where it did not (a chain of pairs); returns each of ``tensors``' name in ``graph``. The same nodes on the same
    values: the same results as the equalized model's own session."""
    initializers = {t.name: t for t in equalized.graph.initializer}
    renamed: dict[str, str] = {}
    for node in equalized.graph.node:
        if not any(out in tensors for out in node.output):
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = node.name + _EQUALIZED_SUFFIX
        for i, name in enumerate(node.input):
            if name in renamed:
                copy.input[i] = renamed[name]
            elif name in initializers:
                weight = onnx.TensorProto()
                weight.CopyFrom(initializers[name])
                weight.name = name + _EQUALIZED_SUFFIX
                graph.initializer.append(weight)
                copy.input[i] = weight.name
        for i, name in enumerate(node.output):
            renamed[name] = copy.output[i] = name + _EQUALIZED_SUFFIX
        graph.node.append(copy)
    return renamed


def equalized_tensors(model: onnx.ModelProto, pairs: Iterable[tuple[str, str]]) -> tuple[set[str], set[str]]:
    """What cross-layer equalization of ``pairs`` changes in ``model`` (the equalized one): the tensors between each pair
    (the first Conv's output and the Relu's after it, divided per channel by the scales) and the layers reading them
    (the second Convs: their inputs' means and second moments change). Every other tensor is the same function of the
    input as before; its values differ from the source model's only by float rounding."""
    users = _consumers(model.graph)
    nodes = {n.name: n for n in model.graph.node}
    tensors: set[str] = set()
    layers: set[str] = set()
    for first, second in pairs:
        tensor = nodes[first].output[0]
        tensors.add(tensor)
        between = users.get(tensor, [])
        if len(between) == 1 and between[0].op_type in SCALE_EQUIVARIANT:
            tensors.add(between[0].output[0])
        layers.add(second)
    return tensors, layers


def equalized_statistics(stats: Statistics, tensors: Collection[str]) -> Statistics:
    """The equalized model's statistics from a pass that collected ``stats.equalized`` beside the source's: those of
    ``tensors`` (what equalization changes) and of the layers reading them, the source's for the rest (the same
    function of the input, float rounding apart), sharing its histogram objects (so ranges computed for them are
    reused)."""
    changed = stats.equalized
    if changed is None:
        raise ValueError(
            "the statistics pass did not collect the equalized model's (collect_statistics(equalized=...))"
        )
    histograms = {name: hist for name, hist in stats.histograms.items() if name not in tensors}
    histograms.update(changed.histograms)
    extremes = {name: bounds for name, bounds in stats.extremes.items() if name not in tensors}
    extremes.update(changed.extremes)
    return Statistics(
        histograms=histograms,
        input_means={**stats.input_means, **changed.input_means},
        samples=stats.samples,
        second_moments={**stats.second_moments, **changed.second_moments},
        extremes=extremes,
    )


def roundable_layers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Weighted layers adaptive rounding covers, each with a float initializer weight of its own, by node name: Gemm,
    1x1 convolutions (group 1, no padding), and 2-D convolutions with a kernel that are depthwise (one input channel
    per output channel) or narrow (group 1, at most ``NARROW_FAN_IN`` weights per output channel: an RGB stem),
    with explicit padding. Wider convolutions with a kernel are left out: their patch second moments grow with
    the square of channels x taps."""
    inits = {t.name: t for t in model.graph.initializer}
    users = _consumers(model.graph)
    chosen: dict[str, onnx.NodeProto] = {}
    for node in _weighted_layers(model):
        weight = inits[node.input[1]]
        if len(users[node.input[1]]) != 1 or weight.data_type != TensorProto.FLOAT:
            continue
        if node.op_type == "Conv":
            pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [])
            auto_pad = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
            if auto_pad not in (b"NOTSET", b"VALID"):
                continue
            pointwise = _attr(node, "group", 1) == 1 and all(d == 1 for d in weight.dims[2:]) and not any(pads)
            patched = len(weight.dims) == 4 and (
                _is_depthwise(node, inits)
                or (_attr(node, "group", 1) == 1 and int(np.prod(weight.dims[1:])) <= NARROW_FAN_IN)
            )
            if not pointwise and not patched:
                continue
        chosen[node.name] = node
    return chosen


def _in_features(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> int:
    dims = inits[node.input[1]].dims
    if node.op_type == "Gemm" and not _attr(node, "transB", 0):
        return int(dims[0])
    return int(dims[1])


def _has_kernel(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """A Conv whose second moment is over input patches (a kernel larger than 1x1, or padding): depthwise or stem."""
    if node.op_type != "Conv":
        return False
    pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [])
    return _is_depthwise(node, inits) or any(d != 1 for d in inits[node.input[1]].dims[2:]) or any(pads)


def _second_moment(
    node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]
) -> pt.SecondMoment | pt.ChannelSecondMoments:
    """The empty second moment of a roundable layer: per channel for a depthwise convolution, else one matrix over
    the weight row's inputs (channels x taps for a convolution with a kernel)."""
    dims = inits[node.input[1]].dims
    if node.op_type == "Conv" and _is_depthwise(node, inits):
        return pt.ChannelSecondMoments(int(dims[0]), int(np.prod(dims[2:])))
    if node.op_type == "Conv":
        return pt.SecondMoment(int(np.prod(dims[1:])))
    return pt.SecondMoment(_in_features(node, inits))


def _moment_bytes(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> int:
    dims = inits[node.input[1]].dims
    if node.op_type == "Conv" and _is_depthwise(node, inits):
        taps = int(np.prod(dims[2:]))
        return int(dims[0]) * taps * taps * np.dtype(np.float64).itemsize
    features = int(np.prod(dims[1:])) if node.op_type == "Conv" else _in_features(node, inits)
    return features * features * np.dtype(np.float64).itemsize


def _add_patch_moment(
    moment: pt.SecondMoment | pt.ChannelSecondMoments,
    node: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    activation: np.ndarray,
) -> None:
    """Add one batch of a convolution's input patches to its second moment, one sample at a time (a depthwise
    layer's patches are 9-25x its input)."""
    geometry = _conv_geometry(node, [int(d) for d in inits[node.input[1]].dims[2:]])
    for sample in activation:
        columns = pt.patch_columns(sample[None], **geometry)
        if isinstance(moment, pt.ChannelSecondMoments):
            moment.add(columns)
        else:
            moment.add(columns.reshape(-1, columns.shape[2]).T)


def _conv_geometry(node: onnx.NodeProto, kernel: list[int]) -> dict[str, list[int]]:
    """``pt.patch_columns``' arguments from a Conv node's attributes and its weight's kernel dims."""
    ints = {a.name: list(a.ints) for a in node.attribute if a.type == onnx.AttributeProto.INTS}
    return {
        "kernel": kernel,
        "strides": ints.get("strides") or [1] * len(kernel),
        "pads": ints.get("pads") or [0] * (2 * len(kernel)),
        "dilations": ints.get("dilations") or [1] * len(kernel),
    }


def _input_rows(node: onnx.NodeProto, activation: np.ndarray) -> np.ndarray:
    """A roundable layer's input as the rows its weight multiplies (a strided 1x1 convolution sees every s-th position)."""
    if node.op_type != "Conv":
        return activation.reshape(activation.shape[0], -1)
    strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [])
    if any(st != 1 for st in strides):
        activation = activation[(slice(None), slice(None), *(slice(None, None, st) for st in strides))]
    return pt.conv1x1_rows(activation)


# --------------------------------------------------------------------------- ranges and bias correction


def _entropy_range(hist: pt.Histogram) -> tuple[float, float]:
    """ORT's KL threshold search (``kl_threshold``, the same arithmetic) on the histogram merged to ENTROPY_BINS
    symmetric bins."""
    small = pt.rebin_symmetric(pt.symmetric_histogram(hist), ENTROPY_BINS)
    if len(small.counts) < ENTROPY_QUANTIZED_BINS:
        return pt.minmax_range(hist)
    lo, hi = kl_threshold(
        small.counts,
        small.edges.astype(np.float32),
        np.float32(small.minimum),
        np.float32(small.maximum),
        ENTROPY_QUANTIZED_BINS,
    )
    return float(lo), float(hi)


def kl_threshold(
    counts: np.ndarray, edges: np.ndarray, minimum: np.floating, maximum: np.floating, quantized_bins: int
) -> tuple[np.floating, np.floating]:
    """ONNX Runtime's entropy calibration (``HistogramCollector.get_entropy_threshold``) with every candidate
    threshold at once: the same integer merging, smoothing and float32 KL divergence, element by element, so the
    same threshold wins; only the per-threshold sums run one by one (numpy's summation order depends on the length).
    ORT loops in Python over thresholds and bins (0.1 s a tensor; this: a few ms).

    Candidate i keeps the symmetric window of 2i + 1 bins around the middle bin (outliers folded into its end bins),
    for i from quantized_bins / 2 to half the bins; the threshold with the least KL divergence between that window
    and its merge into ``quantized_bins`` bins wins, clipped to [minimum, maximum].
    """
    hist = np.asarray(counts, dtype=np.int64)
    bins = hist.size
    middle = bins // 2
    reach = np.arange(quantized_bins // 2, middle + 1)
    starts = middle - reach
    ends = np.minimum(middle + reach + 1, bins)
    sizes = ends - starts
    rows = len(reach)
    columns = np.arange(int(sizes.max()))
    valid = columns[None, :] < sizes[:, None]
    window = np.where(valid, hist[np.minimum(starts[:, None] + columns[None, :], bins - 1)], 0)
    cumulative = np.concatenate([[0], np.cumsum(hist)])
    p = window.copy()
    p[:, 0] += cumulative[starts]
    p[np.arange(rows), sizes - 1] += cumulative[-1] - cumulative[ends]
    # q: the window merged into quantized_bins groups of ``merged`` bins (the tail beyond them counted into the
    # last group but not spread back), each group's count spread evenly (truncated) over its bins where p is non-zero
    merged = sizes // quantized_bins
    q = np.zeros_like(p)
    for m in np.unique(merged):
        chosen = np.flatnonzero(merged == m)
        span = quantized_bins * int(m)
        grouped = window[chosen, :span].reshape(len(chosen), quantized_bins, int(m)).sum(axis=2)
        grouped[:, -1] += window[chosen, span:].sum(axis=1)
        norms = (p[chosen, :span] != 0).reshape(len(chosen), quantized_bins, int(m)).sum(axis=2)
        share = np.where(norms != 0, grouped / np.where(norms != 0, norms, 1), 0.0)
        q[chosen, :span] = np.repeat(share, int(m), axis=1).astype(np.int64)
    p_smooth, p_ok = _smooth_distributions(p, valid, sizes)
    q_smooth, q_ok = _smooth_distributions(q, valid, sizes)
    add = np.add.reduce
    p_total = np.array([add(p_smooth[r, : sizes[r]]) for r in range(rows)], dtype=np.float32)
    q_total = np.array([add(q_smooth[r, : sizes[r]]) for r in range(rows)], dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pk = p_smooth / p_total[:, None]
        qk = q_smooth / q_total[:, None]
        terms = pk * np.log(pk / qk)
    terms[~((pk > 0) & (qk > 0))] = np.inf
    divergence = np.array([add(terms[r, : sizes[r]]) for r in range(rows)], dtype=edges.dtype)
    divergence[~(p_ok & q_ok)] = np.inf
    best = int(np.argmin(divergence))
    lo, hi = edges[starts[best]], edges[ends[best]]
    return (minimum if lo < minimum else lo), (maximum if hi > maximum else hi)


def _smooth_distributions(
    counts: np.ndarray, valid: np.ndarray, sizes: np.ndarray, eps: float = 0.0001
) -> tuple[np.ndarray, np.ndarray]:
    """ORT's ``smooth_distribution`` of each row's first ``sizes`` counts (float32: eps added to the zeros, taken off
    the others in proportion), and whether the row had a non-zero count (ORT: no distribution, infinite divergence)."""
    zeros = (valid & (counts == 0)).astype(np.float32)
    nonzeros = (valid & (counts != 0)).astype(np.float32)
    n_zeros = zeros.sum(axis=1)
    n_nonzeros = sizes - n_zeros
    ok = n_nonzeros != 0
    eps1 = eps * n_zeros.astype(np.float64) / np.where(ok, n_nonzeros, 1).astype(np.float64)
    smoothed = counts.astype(np.float32)
    smoothed += np.float32(eps) * zeros + (-eps1).astype(np.float32)[:, None] * nonzeros
    return smoothed, ok


#: Range rules by name, the candidates of the algorithm choice ("mse" is the range search).
RANGE_RULES: dict[str, Callable[[pt.Histogram, float], tuple[float, float]]] = {
    "minmax": lambda h, _p: pt.minmax_range(h),
    "entropy": lambda h, _p: _entropy_range(h),
    "percentile": lambda h, p: pt.percentile_range(h, p),
    "mse": lambda h, _p: pt.mse_range(h),
}


#: Ranges already computed, by (rule, percentile, id of the histogram), with the histogram itself (kept alive so its id
#: is not reused): see ``ranges_by``.
RangeCache = dict[tuple[str, float, int], tuple[pt.Histogram, float, float]]


def ranges_by(
    rule: str,
    stats: Statistics,
    *,
    percentile: float,
    algorithm: api.CalibrationAlgorithm,
    cache: RangeCache | None = None,
) -> TensorsData:
    """Every calibrated tensor's range by ``rule``, labelled with ``algorithm``'s ORT method (quantize_static checks that label).

    ``cache``: ranges computed before for the same histogram objects are taken from it and new ones added (the search
    asks for a rule again under bias correction, and the equalized model's statistics share the histograms that
    equalization leaves alone); each call returns fresh ``TensorData``.
    """
    compute = RANGE_RULES[rule]
    data = {}
    for name, hist in stats.histograms.items():
        key = (rule, percentile, id(hist))
        known = cache.get(key) if cache is not None else None
        if known is not None and known[0] is hist:
            lo, hi = known[1], known[2]
        else:
            lo, hi = compute(hist, percentile)
            if cache is not None:
                cache[key] = (hist, lo, hi)
        data[name] = TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
    for name, (lo, hi) in stats.extremes.items():  # every rule: quantize_static replaces these ranges anyway
        data[name] = TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
    return TensorsData(ORT_METHOD[algorithm], data)


def correct_biases(
    source: Path,
    target: Path,
    *,
    input_means: dict[str, np.ndarray],
    weight_qmax: int,
    per_channel: bool,
    skip_weights: frozenset[str] = frozenset(),
    float_weights: Path | None = None,
) -> tuple[Path, int]:
    """``source`` with each Conv/Gemm bias corrected for the mean output shift of its quantized weights; returns the layers changed.

    Layers whose weight is in ``skip_weights`` (quantized to 16 bits: no shift worth correcting) keep their bias.
    ``float_weights``: the model whose weights are the float ones, when ``source``'s were already rounded onto the
    grid (adaptive rounding): the shift is then that of the rounded weights against those.
    """
    model = onnx.load(str(source))
    inits = {t.name: t for t in model.graph.initializer}
    originals = (
        {t.name: t for t in onnx.load(str(float_weights)).graph.initializer} if float_weights is not None else inits
    )
    users = _consumers(model.graph)
    changed = 0
    for node in _weighted_layers(model):
        mean = input_means.get(node.name)
        if mean is None or node.input[1] in skip_weights:
            continue
        current = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        weight = numpy_helper.to_array(originals.get(node.input[1], inits[node.input[1]])).astype(np.float32)
        if node.op_type == "Conv":
            err = pt.quantize_weights_symmetric(current, qmax=weight_qmax, per_channel=per_channel, axis=0) - weight
            shift = pt.conv_output_shift(err, mean, group=_attr(node, "group", 1))
        else:
            trans_b = _attr(node, "transB", 0)
            axis = 0 if trans_b else 1
            err = pt.quantize_weights_symmetric(current, qmax=weight_qmax, per_channel=per_channel, axis=axis) - weight
            shift = pt.dense_output_shift(err if trans_b else err.T, mean)
            alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
            beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0)
            if beta == 0:
                continue
            shift = shift * alpha / beta
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias_name is not None and (bias_name not in inits or len(users[bias_name]) != 1):
            continue
        if bias_name is not None and tuple(inits[bias_name].dims) != shift.shape:
            continue
        bias = numpy_helper.to_array(inits[bias_name]) if bias_name else None
        new = pt.corrected_bias(bias, shift)
        if bias_name is None:
            bias_name = node.name + "/edgequant_bias"
            model.graph.initializer.append(numpy_helper.from_array(new, bias_name))
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = bias_name
        else:
            inits[bias_name].CopyFrom(numpy_helper.from_array(new, bias_name))
        changed += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target, changed


@dataclass(frozen=True)
class Rounded:
    """What adaptive rounding did to a model."""

    path: Path
    layers: int
    error_ratio: float
    """Mean over the rounded layers of their output error against round-to-nearest's (below 1: better)."""
    with_kernel: int = 0
    """Of ``layers``, the depthwise and stem convolutions (rounded over input patches)."""


def round_weights_adaptively(
    source: Path,
    target: Path,
    *,
    moments: dict[str, pt.SecondMoment | pt.ChannelSecondMoments],
    weight_qmax: int,
    per_channel: bool,
    skip_weights: frozenset[str] = frozenset(),
) -> Rounded:
    """``source`` with the weights of its roundable layers replaced by ``pt.adaptive_rounding`` of them: float32 values
    on the symmetric grid quantize_static uses, so its round-to-nearest keeps them as they are.

    Layers whose weight is in ``skip_weights`` (16-bit weights) and layers without a second moment are left alone,
    as are depthwise ones under per-tensor weights (their rows share one scale; each is rounded on its own).
    """
    model = onnx.load(str(source))
    inits = {t.name: t for t in model.graph.initializer}
    ratios: list[float] = []
    changed = with_kernel = 0
    with one_blas_thread():
        for name, node in roundable_layers(model).items():
            moment = moments.get(name)
            if moment is None or moment.rows == 0 or node.input[1] in skip_weights:
                continue
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            transposed = node.op_type == "Gemm" and not _attr(node, "transB", 0)
            matrix = weight.T if transposed else weight.reshape(weight.shape[0], -1)
            nearest = pt.quantize_weights_symmetric(matrix, qmax=weight_qmax, per_channel=per_channel)
            if isinstance(moment, pt.ChannelSecondMoments):
                if not per_channel:
                    continue
                rounded = pt.adaptive_rounding_per_channel(matrix, moment.matrix, qmax=weight_qmax)
                before = pt.output_error_per_channel(matrix, nearest, moment.matrix)
                after = pt.output_error_per_channel(matrix, rounded, moment.matrix)
            else:
                rounded = pt.adaptive_rounding(matrix, moment.matrix, qmax=weight_qmax, per_channel=per_channel)
                before = pt.output_error(matrix, nearest, moment.matrix)
                after = pt.output_error(matrix, rounded, moment.matrix)
            if before > 0:
                ratios.append(after / before)
            new = (rounded.T if transposed else rounded.reshape(weight.shape)).astype(np.float32)
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), node.input[1]))
            changed += 1
            with_kernel += _has_kernel(node, inits)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return Rounded(
        path=target,
        layers=changed,
        error_ratio=float(np.mean(ratios)) if ratios else 1.0,
        with_kernel=with_kernel,
    )


# --------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class Tuned:
    """The float model to quantize and its activation ranges, as the techniques chosen left them."""

    float_model: FloatModel
    ranges_path: Path
    rule: str
    notes: list[str]
    scores: list[pt.Score]
    uncorrected: Path | None = None
    """The model before bias correction and adaptive rounding, when either was applied: layers kept in float take
    their weights and biases from it, and it is the float function the artifact quantizes."""
    sixteen_bit_weights: tuple[str, ...] = ()
    """Weight initializers to quantize to int16 (sixteenBitWeights' choice)."""
    sixteen_bit_activations: tuple[str, ...] = ()
    """Activation tensors to quantize to 16 bit (sixteenBitActivations' choice)."""

    def settings_for(self, settings: StaticSettings) -> StaticSettings:
        """``settings`` with this tuning's 16-bit weights and activations."""
        return settings.model_copy(
            update={
                "sixteen_bit_weights": self.sixteen_bit_weights,
                "sixteen_bit_activations": self.sixteen_bit_activations,
            }
        )

    def for_keep_float(self, keep_float: tuple[str, ...], workdir: Path) -> FloatModel:
        """The model to quantize with ``keep_float`` nodes left in float: those keep their float weights and biases."""
        if not keep_float or self.uncorrected is None:
            return self.float_model
        digest = hashlib.sha256("\n".join(sorted(keep_float)).encode()).hexdigest()[:8]
        path = restore_biases(
            self.float_model.path, self.uncorrected, set(keep_float), workdir / f"bias-corrected-float-{digest}.onnx"
        )
        return FloatModel(path=path, model=self.float_model.model, preprocessed=self.float_model.preprocessed)


@dataclass
class _Branch:
    """One line of the greedy search: the float model so far, its ranges and held-out score, and what it applied."""

    model: FloatModel
    ranges: Path
    score: pt.Score | None
    rule: str
    label: list[str]
    notes: list[str] = field(default_factory=list)
    unrounded: Path | None = None
    uncorrected: Path | None = None

    def copy(self) -> _Branch:
        return _Branch(
            self.model,
            self.ranges,
            self.score,
            self.rule,
            list(self.label),
            list(self.notes),
            self.unrounded,
            self.uncorrected,
        )

    def beaten_by(self, score: pt.Score | None) -> bool:
        """``score`` is higher than this branch's (held-out agreement, then SQNR)."""
        return score is not None and self.score is not None and pt.best_candidate([self.score, score]) is score

    def name(self, *, rule: bool = True) -> str:
        """The candidate-name prefix of what this branch applied (``mse+cle+w16+ar``)."""
        short = {
            "cross-layer equalization": "cle",
            "16-bit weights": "w16",
            "adaptive rounding": "ar",
            "bias correction": "bc",
        }
        tags = [short.get(t, t) for t in self.label[1:]]
        return "+".join(([self.label[0]] if rule else [""]) + tags) if tags or rule else ""


def restore_biases(corrected: Path, original: Path, nodes: set[str], target: Path) -> Path:
    """``corrected`` with the weights and biases of ``nodes`` as in ``original``: a float layer has no quantization
    shift to correct and no rounding to adapt."""
    model = onnx.load(str(corrected))
    before = {t.name: t for t in onnx.load(str(original)).graph.initializer}
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.name in nodes and len(node.input) > 1 and node.input[1] in before and node.input[1] in inits:
            inits[node.input[1]].CopyFrom(before[node.input[1]])
        if node.name in nodes and len(node.input) > 2 and node.input[2]:
            name = node.input[2]
            if name in before:
                inits[name].CopyFrom(before[name])
            elif name in inits:  # a bias bias correction added: zero in the original
                zero = np.zeros(tuple(inits[name].dims), dtype=np.float32)
                inits[name].CopyFrom(numpy_helper.from_array(zero, name))
    onnx.save(model, str(target))
    return target


def _predict(path: Path, inputs: np.ndarray, *, chunk: int = 32) -> np.ndarray:
    predictor = OrtPredictor(path)
    return np.concatenate([predictor.predict(inputs[i : i + chunk]) for i in range(0, len(inputs), chunk)])


def _rules(settings: StaticSettings, options: api.PostTraining, *, algorithm_given: bool) -> list[str]:
    """Range rules to try, the configured algorithm first (the baseline every other must beat).

    A calibration.algorithm written in the spec is used as it is (no choice among algorithms, no range search
    unless rangeSearch is on).
    """
    if options.range_search is api.Technique.ON:
        return ["mse"]
    own = settings.algorithm.value
    if not options.select_algorithm or algorithm_given:
        return [own]
    rules = [own] + [r for r in ("minmax", "entropy", "percentile") if r != own]
    if options.range_search is api.Technique.AUTO:
        rules.append("mse")
    return rules


def tune(
    *,
    float_model: FloatModel,
    calibration: Batches,
    settings: StaticSettings,
    options: api.PostTraining,
    workdir: Path,
    algorithm_given: bool = False,
    min_agreement: float | None = None,
    memory_budget_bytes: int = DEFAULT_BUDGET_BYTES,
    log: Callable[[str], None] = lambda _m: None,
) -> Tuned:
    """Apply ``options``' techniques, each auto one kept only if it raises agreement on the held-out split (greedy, in order:
    range rule, cross-layer equalization, adaptive rounding, bias correction); then, only while the held-out agreement
    is below ``min_agreement`` (acceptance.minAgreement), 16-bit weights (with rounding and correction again around
    them) and 16-bit activations, which cost speed."""
    workdir.mkdir(parents=True, exist_ok=True)
    search_started, search_cpu = time.perf_counter(), time.process_time()
    settings = settings.model_copy(update={"keep_float": ()})
    every = max(2, round(1 / options.held_out_fraction))
    # budget-driven techniques need the held-out split only under a budget
    searched = [t for t in options.TECHNIQUES if min_agreement is not None or t not in options.BUDGET_DRIVEN]
    auto = (options.select_algorithm and not algorithm_given) or any(
        getattr(options, t) is api.Technique.AUTO for t in searched
    )
    notes: list[str] = []
    held: np.ndarray | None = None
    fit = calibration
    if auto:
        if calibration.count // every < 20:
            notes.append(
                f"ptq: {calibration.count} calibration samples are too few to hold out {options.held_out_fraction:g} for scoring (20 needed): auto techniques off"
            )
            options = options.model_copy(
                update={
                    "select_algorithm": False,
                    **{k: api.Technique.OFF for k in options.TECHNIQUES if getattr(options, k) is api.Technique.AUTO},
                }
            )
        else:
            fit, held = calibration.held_out(every=every)
    reference = _predict(float_model.path, held) if held is not None else None
    scores: list[pt.Score] = []
    counter = iter(range(1000))
    # each float model's first Q/DQ candidate, re-parameterized for the other range rules scored on it
    templates: dict[Path, QdqTemplate | None] = {}

    def candidate(
        name: str,
        path: Path,
        ranges: TensorsData,
        wide: tuple[str, ...] = (),
        wide_activations: tuple[str, ...] = (),
        *,
        float_outputs: bool = settings.float_outputs,
        record: bool = True,
    ) -> tuple[FloatModel, Path, pt.Score | None]:
        """Quantize ``path`` with ``ranges`` and score it on the held-out split (``record``: among the search's
        candidates; else only returned)."""
        model = FloatModel(path=path, model=float_model.model, preprocessed=float_model.preprocessed)
        ranges_path = save_ranges(ranges, workdir / f"candidate-{next(counter)}.ranges.json")
        if reference is None:
            return model, ranges_path, None
        started = time.perf_counter()
        out = workdir / "candidate.qdq.onnx"
        chosen = settings.model_copy(
            update={
                "sixteen_bit_weights": wide,
                "sixteen_bit_activations": wide_activations,
                "float_outputs": float_outputs,
            }
        )
        if path not in templates and chosen == settings:
            # another float model of the same graph (rounded, corrected, equalized weights): the first template's
            source = next((t for t in templates.values() if t is not None), None)
            derived = source.with_weights(onnx.load(str(path))) if source is not None else None
            if derived is not None:
                templates[path] = derived
        template = templates.get(path)
        patched = (
            template.for_ranges(load_ranges(ranges_path))
            if template is not None and chosen == template.settings
            else None
        )
        if patched is not None:
            onnx.save(patched, str(out))
        else:
            quantize_qdq(float_model=model, output_path=out, ranges_path=ranges_path, settings=chosen)
            if path not in templates:
                templates[path] = QdqTemplate.build(
                    float_path=path, qdq_path=out, ranges_path=ranges_path, settings=chosen
                )
        logits = _predict(out, held)  # type: ignore[arg-type]
        score = pt.Score(
            name=name,
            agreement=pt.top1_agreement(reference, logits),
            sqnr_db=pt.sqnr_db(reference, logits),
            samples=len(reference),
        )
        if record:
            scores.append(score)
        log(
            f"ptq candidate {name}: held-out agreement {score.agreement:.3f}, SQNR {score.sqnr_db:.1f} dB "
            f"({time.perf_counter() - started:.1f} s)"
        )
        return model, ranges_path, score

    def statistics(path: Path, equalized: tuple[Path, PairSearch] | None) -> Statistics:
        """The statistics pass over ``fit`` (and, beside it, over what ``equalized``'s equalization changes)."""
        started, cpu = time.perf_counter(), time.process_time()
        fixed = statistics_fixed_bytes(onnx.load(str(path), load_external_data=False), second_moments=rounding)
        per_sample = activation_bytes_per_sample(path)
        chunk = statistics_chunk(budget_bytes=memory_budget_bytes, fixed_bytes=fixed, bytes_per_sample=per_sample)
        log(
            f"ptq statistics: {chunk} samples per run (histograms and second moments {fixed / 2**20:.1f} MiB, "
            + (f"{per_sample / 2**20:.1f} MiB of activations per sample, " if per_sample else "")
            + f"memory budget {memory_budget_bytes / 2**20:.0f} MiB)"
        )
        stats = collect_statistics(
            path,
            model_batches(fit, fixed_batch=float_model.model.fixed_batch),
            input_name=float_model.model.input_name,
            workdir=workdir,
            fixed_batch=float_model.model.fixed_batch,
            second_moments=rounding,
            chunk=chunk,
            equalized=None if equalized is None else (equalized[0], equalized[1].pairs),
            moment_every=pt.moment_sample_stride(fit.count),
        )
        log(
            f"ptq statistics pass over {fit.count} samples"
            + ("" if equalized is None else " (with the equalized model's changed tensors)")
            + f": {time.perf_counter() - started:.1f} s (CPU {time.process_time() - cpu:.1f} s, all threads)"
        )
        return stats

    int8 = settings.weight_type is api.OnnxQuantType.INT8
    qmax = 64 if settings.reduce_range else 127
    rounding = options.adaptive_rounding is not api.Technique.OFF and int8
    # equalization depends on the weights alone: its changed tensors are collected in the same pass as the source's
    equalized = (
        equalize_model(float_model.path, workdir / "equalized.onnx")
        if options.cross_layer_equalization is not api.Technique.OFF
        else None
    )
    stats = statistics(float_model.path, equalized if equalized is not None and equalized[1].pairs else None)
    percentile = settings.percentile
    range_cache: RangeCache = {}
    best: tuple[FloatModel, Path, pt.Score | None, str] | None = None
    tried = _rules(settings, options, algorithm_given=algorithm_given)
    for rule in tried:
        model, rp, score = candidate(
            rule,
            float_model.path,
            ranges_by(rule, stats, percentile=percentile, algorithm=settings.algorithm, cache=range_cache),
        )
        if best is None or (score is not None and best[2] is not None and pt.best_candidate([best[2], score]) is score):
            best = (model, rp, score, rule)
    assert best is not None
    chosen_model, chosen_ranges, chosen_score, rule = best
    label = [rule]

    if equalized is not None:
        path, search = equalized  # of float_model: every range rule candidate quantizes it
        skipped = ", ".join(f"{n} {why}" for why, n in search.skipped.items())
        if not search.pairs:
            notes.append(
                "ptq: cross-layer equalization found no Conv -> [Relu] -> Conv pair"
                + (f" ({skipped} pairs skipped: not scale-equivariant)" if skipped else "")
            )
        else:
            changed, _readers = equalized_tensors(onnx.load(str(path), load_external_data=False), search.pairs)
            eq_stats = equalized_statistics(stats, changed)
            model, rp, score = candidate(
                f"{rule}+cle",
                path,
                ranges_by(rule, eq_stats, percentile=percentile, algorithm=settings.algorithm, cache=range_cache),
            )
            what = f"{len(search.pairs)} Conv pairs" + (
                f"; {skipped} pairs skipped: ReLU6/Clip is not scale-equivariant" if skipped else ""
            )
            if options.cross_layer_equalization is api.Technique.ON or (
                score is not None and chosen_score is not None and pt.best_candidate([chosen_score, score]) is score
            ):
                # scored on the source's statistics where equalization changes nothing (the same function, float
                # rounding apart); what follows (the rule's ranges, adaptive rounding's second moments, bias
                # correction's means, the other rules) gets the equalized model's own pass: the same as without that
                # shortcut, which saves the pass whenever equalization is not kept
                stats = statistics(path, None)
                ranges = ranges_by(rule, stats, percentile=percentile, algorithm=settings.algorithm, cache=range_cache)
                rp = save_ranges(ranges, workdir / "equalized.ranges.json")
                chosen_model, chosen_ranges, chosen_score = model, rp, score
                label.append("cross-layer equalization")
                notes.append(f"ptq: cross-layer equalization applied to {what}")
            else:
                notes.append(f"ptq: cross-layer equalization ({what}) not kept: no gain on the held-out split")

    def weight_techniques(branch: _Branch, wide: tuple[str, ...], tag: str) -> _Branch:
        """Adaptive rounding, then bias correction (under every range rule scored), on ``branch``, leaving the
        ``wide`` (16-bit) weights alone; each auto one kept only if it scores higher. ``tag`` names the work files."""
        b = branch.copy()
        if options.adaptive_rounding is not api.Technique.OFF:
            if not int8:
                b.notes.append(
                    "ptq: adaptive rounding skipped: it rounds onto symmetric int8 grids (spec.onnx.weightType int8)"
                )
            else:
                rounded = round_weights_adaptively(
                    b.model.path,
                    workdir / f"rounded{tag}.onnx",
                    moments=stats.second_moments,
                    weight_qmax=qmax,
                    per_channel=settings.per_channel,
                    skip_weights=frozenset(wide),
                )
                if not rounded.layers:
                    b.notes.append(
                        "ptq: adaptive rounding: no 1x1, depthwise or stem convolution or Gemm layer with 8-bit weights"
                    )
                else:
                    what = (
                        f"{rounded.layers} Conv/Gemm layers, {rounded.with_kernel} of them depthwise or stem "
                        f"convolutions (output error on the calibration inputs "
                        f"{rounded.error_ratio:.2f}x round-to-nearest's, mean over layers)"
                    )
                    model, rp, score = candidate(f"{b.name()}+ar", rounded.path, load_ranges(b.ranges), wide=wide)
                    if options.adaptive_rounding is api.Technique.ON or b.beaten_by(score):
                        b.unrounded = b.model.path
                        b.model, b.ranges, b.score = model, rp, score
                        b.label.append("adaptive rounding")
                        b.notes.append(f"ptq: adaptive rounding of {what}")
                    else:
                        b.notes.append(f"ptq: adaptive rounding ({what}) not kept: no gain on the held-out split")
        if options.bias_correction is not api.Technique.OFF:
            if not int8:
                b.notes.append(
                    "ptq: bias correction skipped: it models symmetric int8 weights (spec.onnx.weightType int8)"
                )
                return b
            path, changed = correct_biases(
                b.model.path,
                workdir / f"bias-corrected{tag}.onnx",
                input_means=stats.input_means,
                weight_qmax=qmax,
                per_channel=settings.per_channel,
                skip_weights=frozenset(wide),
                float_weights=b.unrounded,
            )
            # bias correction shifts what the best ranges are: try it under every range rule scored above (no new pass)
            best_bc: tuple[FloatModel, Path, pt.Score | None, str] | None = None
            for r in [b.rule, *(r for r in tried if r != b.rule)] if reference is not None else [b.rule]:
                ranges = (
                    load_ranges(b.ranges)
                    if r == b.rule
                    else ranges_by(r, stats, percentile=percentile, algorithm=settings.algorithm, cache=range_cache)
                )
                model, rp, score = candidate(f"{r}{b.name(rule=False)}+bc", path, ranges, wide=wide)
                if best_bc is None or (
                    score is not None and best_bc[2] is not None and pt.best_candidate([best_bc[2], score]) is score
                ):
                    best_bc = (model, rp, score, r)
            assert best_bc is not None
            model, rp, score, bc_rule = best_bc
            if options.bias_correction is api.Technique.ON or b.beaten_by(score):
                b.uncorrected = b.unrounded or b.model.path
                b.model, b.ranges, b.score, b.rule = model, rp, score, bc_rule
                b.label[0] = bc_rule
                b.label.append("bias correction")
                b.notes.append(f"ptq: bias correction applied to {changed} Conv/Gemm layers")
            else:
                b.notes.append(f"ptq: bias correction ({changed} layers) not kept: no gain on the held-out split")
        return b

    start = _Branch(model=chosen_model, ranges=chosen_ranges, score=chosen_score, rule=rule, label=list(label))
    loaded = onnx.load(str(start.model.path))
    narrow = narrow_layers(loaded) if options.sixteen_bit_weights is not api.Technique.OFF else []
    forced = options.sixteen_bit_weights is api.Technique.ON and bool(narrow)
    chosen = start if forced else weight_techniques(start, (), "")  # on: no 8-bit line to compare with
    wide: tuple[str, ...] = ()
    if options.sixteen_bit_weights is not api.Technique.OFF:
        why_not = (
            _widening_not_tried("16-bit weights", chosen.score, min_agreement)
            if options.sixteen_bit_weights is api.Technique.AUTO
            else ""
        )
        if not narrow:
            notes.append(f"ptq: 16-bit weights: no convolution with at most {NARROW_FAN_IN} weights per output channel")
        elif why_not:
            notes.append(why_not)
        else:
            weights = tuple(dict.fromkeys(n.input[1] for n in narrow))
            everything = (t.name for t in loaded.graph.initializer)
            share = weight_count(loaded, weights) / max(weight_count(loaded, everything), 1)
            what = (
                f"{len(narrow)} convolutions with at most {NARROW_FAN_IN} weights per output channel "
                f"({100 * share:.1f} % of the weights)"
            )
            _model, rp, score = candidate(
                f"{start.name()}+w16", start.model.path, load_ranges(start.ranges), wide=weights
            )
            sixteen = start.copy()
            sixteen.ranges, sixteen.score = rp, score
            sixteen.label.append("16-bit weights")
            sixteen = weight_techniques(sixteen, weights, "-w16")
            if forced or chosen.beaten_by(sixteen.score):
                wide, chosen = weights, sixteen
                notes.append(f"ptq: 16-bit weights for {what}")
            else:
                notes.append(f"ptq: 16-bit weights ({what}) not kept: no gain on the held-out split")
    notes.extend(chosen.notes)
    chosen_model, chosen_ranges, chosen_score, rule = chosen.model, chosen.ranges, chosen.score, chosen.rule
    label, unrounded, uncorrected = chosen.label, chosen.unrounded, chosen.uncorrected

    wide_activations: tuple[str, ...] = ()
    if options.sixteen_bit_activations is not api.Technique.OFF:
        loaded = onnx.load(str(chosen_model.path))
        narrow = narrow_layers(loaded)
        scopes = [
            ("a16", f"the activations around {len(narrow)} narrow convolutions", narrow_activations(loaded, narrow)),
            ("a16all", "every activation", tuple(calibrated_tensors(loaded))),
        ]
        name = chosen.name()
        if options.sixteen_bit_activations is api.Technique.ON:
            tag, what, tensors = scopes[0]
            if tensors:
                _model, rp, score = candidate(
                    f"{name}+{tag}", chosen_model.path, load_ranges(chosen_ranges), wide, tensors
                )
                wide_activations, chosen_ranges, chosen_score = tensors, rp, score
                label.append("16-bit activations")
                notes.append(f"ptq: 16-bit activations for {what} ({len(tensors)} tensors)")
            else:
                notes.append(
                    f"ptq: 16-bit activations: no convolution with at most {NARROW_FAN_IN} weights per output channel"
                )
        else:
            step = _widening_not_tried("16-bit activations", chosen_score, min_agreement)
            if step:
                notes.append(step)
            else:
                assert chosen_score is not None and min_agreement is not None
                picked: tuple[str, tuple[str, ...], Path, pt.Score] | None = None
                for tag, what, tensors in (scope for scope in scopes if scope[2]):
                    _model, rp, score = candidate(
                        f"{name}+{tag}", chosen_model.path, load_ranges(chosen_ranges), wide, tensors
                    )
                    assert score is not None
                    if picked is None or pt.best_candidate([picked[3], score]) is score:
                        picked = (what, tensors, rp, score)
                    if score.agreement >= min_agreement:
                        picked = (what, tensors, rp, score)
                        break
                if picked is not None and pt.best_candidate([chosen_score, picked[3]]) is picked[3]:
                    what, wide_activations, chosen_ranges, chosen_score = picked
                    label.append("16-bit activations")
                    notes.append(
                        f"ptq: 16-bit activations for {what} ({len(wide_activations)} tensors): held-out agreement "
                        f"with 8-bit activations was below acceptance.minAgreement {min_agreement:g}"
                    )
                else:
                    notes.append("ptq: 16-bit activations not kept: no gain on the held-out split")

    if uncorrected is None:
        uncorrected = unrounded
    if settings.float_outputs and chosen_score is not None:
        _model, _rp, rounded_outputs = candidate(
            f"{chosen_score.name} with 8-bit outputs",
            chosen_model.path,
            load_ranges(chosen_ranges),
            wide,
            wide_activations,
            float_outputs=False,
            record=False,
        )
        assert rounded_outputs is not None
        notes.append(
            f"ptq: model outputs left in float (ptq.floatOutputs): held-out agreement {chosen_score.agreement:.3f} "
            f"({chosen_score.sqnr_db:.1f} dB); with quantize_static's Q/DQ on them {rounded_outputs.agreement:.3f} "
            f"({rounded_outputs.sqnr_db:.1f} dB)"
        )
    if scores:
        shown = ", ".join(f"{s.name} {s.agreement:.3f} ({s.sqnr_db:.1f} dB)" for s in scores)
        notes.insert(
            0,
            f"ptq: held-out top-1 agreement with FP32 on {len(held)} calibration samples (SQNR): {shown}; "  # type: ignore[arg-type]
            f"chosen: {' + '.join(label)} (ranges from the other {fit.count})",
        )
    else:
        notes.insert(0, f"ptq: {' + '.join(label)} (no held-out scoring: every technique on or off)")
    log(
        f"ptq search: {len(scores)} candidates scored in {time.perf_counter() - search_started:.1f} s "
        f"(CPU {time.process_time() - search_cpu:.1f} s, all threads)"
    )
    return Tuned(
        float_model=chosen_model,
        ranges_path=chosen_ranges,
        rule=rule,
        notes=notes,
        scores=scores,
        uncorrected=uncorrected,
        sixteen_bit_weights=wide,
        sixteen_bit_activations=wide_activations,
    )


def _widening_not_tried(what: str, chosen: pt.Score | None, min_agreement: float | None) -> str:
    """Why an auto 16-bit technique (``what``) is not tried ("" when it is): 16-bit weights and activations run
    unfused on ONNX Runtime's CPU kernels (EfficientNet-Lite0: 4 ms -> 25 ms per image) and not at all on 8-bit-only
    accelerators, so only an agreement budget that the 8-bit choice misses on the held-out split asks for them."""
    if min_agreement is None:
        return f"ptq: {what} not tried: acceptance.minAgreement is not set (they cost speed)"
    if chosen is None:
        return f"ptq: {what} not tried: no held-out split to score them on"
    if chosen.agreement >= min_agreement:
        return (
            f"ptq: {what} not needed: held-out agreement {chosen.agreement:.3f} meets "
            f"acceptance.minAgreement {min_agreement:g} without them"
        )
    return ""
