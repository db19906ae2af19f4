"""ONNX Runtime quantization as edgequant calls it: pre-process, calibrate, then dynamic or static QDQ.

Public entry points (also for other backends, e.g. TensorRT's explicit
quantization, which consumes the Q/DQ model):

- ``prepare_float_model``: ORT's recommended pre-processing (symbolic + ONNX
  shape inference, basic graph optimization) and the facts about the result.
- ``calibrate`` (``calibration`` module) -> ``save_ranges``: ranges once.
- ``quantize_qdq``: a Q/DQ model from saved ranges; cheap, so mixed precision
  can call it once per set of nodes kept in float without recalibrating.
- ``quantize_static_qdq``: the three steps in one call.
- ``quantize_dynamic_int8``.
- ``convert_to_float16``: the degrade ladder's float16 rung.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnxruntime.quantization import (
    QuantFormat,
    QuantType,
    TensorsData,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
    save_tensors_data,
)

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches
from edgequant.backends.onnxruntime.calibration import ORT_METHOD, calibrate
from edgequant.backends.onnxruntime.model import OnnxModel, check_input, check_keep_float, check_opset, read_model
from edgequant.backends.onnxruntime.options import DynamicSettings, StaticSettings
from edgequant.util.errors import InvalidInputError

if TYPE_CHECKING:
    from onnx import GraphProto, NodeProto

_QUANT_TYPE = {api.OnnxQuantType.INT8: QuantType.QInt8, api.OnnxQuantType.UINT8: QuantType.QUInt8}


@dataclass(frozen=True)
class FloatModel:
    """The float model that is actually quantized (pre-processed or not); node names refer to it."""

    path: Path
    model: OnnxModel
    preprocessed: bool


def prepare_float_model(
    source: Path,
    *,
    workdir: Path,
    preprocess: bool,
    per_channel: bool,
    contract: api.InputContract | None = None,
) -> FloatModel:
    """Check the source model (against ``contract`` when given), then run ORT's quant_pre_process on it unless ``preprocess`` is off."""
    model = read_model(source)
    check_opset(model, per_channel=per_channel)
    if contract is not None:
        check_input(model, contract)
    if not preprocess:
        return FloatModel(path=source, model=model, preprocessed=False)
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / f"{source.stem}.preprocessed.onnx"
    try:
        with contextlib.redirect_stdout(sys.stderr):
            quant_pre_process(str(source), str(target))
    except Exception as exc:
        raise InvalidInputError(
            f"ONNX Runtime's pre-processing (shape inference, optimization) failed on {source.name}: "
            f"{type(exc).__name__}: {str(exc)[:300]}; set spec.onnx.preprocess false to quantize the model as it is"
        ) from exc
    return FloatModel(path=target, model=read_model(target, field=f"pre-processed {source.name}"), preprocessed=True)


def save_ranges(ranges: TensorsData, path: Path) -> Path:
    """Calibration ranges as ONNX Runtime's JSON calibration cache (quantize_static's calibration_cache_path)."""
    save_tensors_data(ranges, path)
    return path


def quantize_qdq(*, float_model: FloatModel, output_path: Path, ranges_path: Path, settings: StaticSettings) -> Path:
    """Static Q/DQ quantization from saved ranges; ``settings.keep_float`` nodes get no Q/DQ."""
    check_keep_float(settings.keep_float, float_model.model)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(float_model.path),
        str(output_path),
        None,
        quant_format=QuantFormat.QDQ,
        per_channel=settings.per_channel,
        reduce_range=settings.reduce_range,
        activation_type=_QUANT_TYPE[settings.activation_type],
        weight_type=_QUANT_TYPE[settings.weight_type],
        nodes_to_exclude=list(settings.keep_float),
        calibrate_method=ORT_METHOD[settings.algorithm],
        calibration_cache_path=str(ranges_path),
        extra_options={
            "ActivationSymmetric": settings.symmetric_activations,
            "WeightSymmetric": settings.symmetric_weights,
            **sixteen_bit_overrides(
                _quantized_weights(settings, float_model.model),
                settings.sixteen_bit_activations,
                activation_type=settings.activation_type,
            ),
        },
    )
    if settings.float_outputs:
        model = onnx.load(str(output_path))
        if with_float_outputs(model):
            onnx.save(model, str(output_path))
    return output_path


def with_float_outputs(model: onnx.ModelProto) -> list[str]:
    """Drop the Q/DQ pair quantize_static ends each graph output with, in place: the output becomes an Identity of the
    float tensor the QuantizeLinear read, and the pair's scale and zero point go when nothing else reads them.
    Returns the outputs changed (an output not made by such a pair, or whose QuantizeLinear feeds anything else, stays)."""
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    changed: list[str] = []
    parameters: set[str] = set()
    for output in graph.output:
        dq = producers.get(output.name)
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if dq is None or q is None or q.op_type != "QuantizeLinear" or readers.get(q.output[0]) != 1:
            continue
        identity = onnx.helper.make_node("Identity", [q.input[0]], [output.name], name=dq.name)
        position = list(graph.node).index(dq)
        graph.node.remove(dq)
        graph.node.insert(position, identity)
        graph.node.remove(q)
        parameters.update([*q.input[1:], *dq.input[1:]])
        changed.append(output.name)
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name in parameters and t.name not in read]:
        graph.initializer.remove(tensor)
    return changed


def _quantized_weights(settings: StaticSettings, model: OnnxModel) -> tuple[str, ...]:
    """``settings.sixteen_bit_weights`` less the weights of nodes kept in float (those are not quantized at all)."""
    kept = set(settings.keep_float)
    floats = {name for n in model.nodes if n.name in kept for name in n.inputs}
    return tuple(w for w in settings.sixteen_bit_weights if w not in floats)


_SIXTEEN_BIT = {api.OnnxQuantType.INT8: QuantType.QInt16, api.OnnxQuantType.UINT8: QuantType.QUInt16}


def sixteen_bit_overrides(
    weights: tuple[str, ...],
    activations: tuple[str, ...] = (),
    *,
    activation_type: api.OnnxQuantType = api.OnnxQuantType.UINT8,
) -> dict[str, object]:
    """quantize_static's extra option giving ``weights`` int16 (symmetric) and ``activations`` 16-bit quantization of
    ``activation_type``'s signedness; the model moves to opset 21. A 16-bit tensor is quantized 16-bit where it is
    produced and read 16-bit by every consumer, so the nodes around it run on dequantized values."""
    overrides: dict[str, list[dict[str, object]]] = {name: [{"quant_type": QuantType.QInt16}] for name in weights}
    overrides.update({name: [{"quant_type": _SIXTEEN_BIT[activation_type]}] for name in activations})
    return {"TensorQuantOverrides": overrides} if overrides else {}


def quantize_static_qdq(
    *,
    model_path: Path,
    output_path: Path,
    calibration: Batches,
    settings: StaticSettings,
    workdir: Path,
    log: Callable[[str], None] = lambda _m: None,
) -> Path:
    """Pre-process, calibrate on ``calibration`` (the shared pipeline's batches) and write the Q/DQ model."""
    float_model = prepare_float_model(
        model_path, workdir=workdir, preprocess=settings.preprocess, per_channel=settings.per_channel
    )
    check_keep_float(settings.keep_float, float_model.model)  # before calibrating, the expensive part
    ranges = calibrate(
        model_path=float_model.path,
        batches=calibration,
        input_name=float_model.model.input_name,
        fixed_batch=float_model.model.fixed_batch,
        settings=settings,
        workdir=workdir / "calibration",
        log=log,
    )
    ranges_path = save_ranges(ranges, workdir / f"{model_path.stem}.{settings.algorithm.value}.ranges.json")
    return quantize_qdq(float_model=float_model, output_path=output_path, ranges_path=ranges_path, settings=settings)


def quantize_dynamic_int8(*, float_model: FloatModel, output_path: Path, settings: DynamicSettings) -> Path:
    """Weights quantized offline (int8 or uint8), activations quantized to uint8 at run time."""
    check_keep_float(settings.keep_float, float_model.model)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(float_model.path),
        str(output_path),
        per_channel=settings.per_channel,
        reduce_range=settings.reduce_range,
        weight_type=_QUANT_TYPE[settings.weight_type],
        nodes_to_exclude=list(settings.keep_float),
    )
    return output_path


FLOAT16_NOTE = (
    "degrade ladder float16 rung: weights and activations converted to float16 by ONNX Runtime's "
    "float16 converter; inputs and outputs stay float32"
)


def convert_to_float16(source: Path, output_path: Path) -> Path:
    """The float model with float16 weights and compute, float32 inputs and outputs (the input contract is unchanged)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    output_path.parent.mkdir(parents=True, exist_ok=True)
    converted = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    _sort_topologically(converted.graph)  # the converter appends its input Casts at the end; the checker wants order
    onnx.save(converted, str(output_path))
    return output_path


def _sort_topologically(graph: GraphProto) -> None:
    """Reorder a graph's nodes so each comes after the producers of its inputs (stable otherwise)."""
    nodes = list(graph.node)
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    ordered: list[NodeProto] = []
    while nodes:
        waiting = []
        for node in nodes:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(nodes):
            raise ValueError(f"graph {graph.name!r} has a cycle or an undefined input at node {waiting[0].name!r}")
        nodes = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def dynamic_cnn_note(model: OnnxModel) -> str | None:
    """onnx-dynamic turns Conv into ConvInteger, slower than float on CPUs; say so for convolution-heavy models."""
    ops = [n.op_type for n in model.nodes if n.op_type in ("Conv", "Gemm", "MatMul")]
    convs = ops.count("Conv")
    if convs and convs * 2 >= len(ops):
        return (
            f"{model.file} is convolutional ({convs} of {len(ops)} weighted ops are Conv): onnx-dynamic runs them as "
            "ConvInteger, often slower than float32 on CPUs (see the latency in this report); onnx-static suits CNNs"
        )
    return None


def _smallest_bias_scales(bias: np.ndarray, *, per_channel: bool) -> np.ndarray:
    """The smallest bias scale quantize_static accepts before it widens the weight scale (int32 range with its 1.0001
    margin), per channel or for the whole tensor, in its own arithmetic (float32 products, then a float64 quotient)."""
    qrange = np.array(np.iinfo(np.int32).max, dtype=np.float64) - np.array(np.iinfo(np.int32).min + 1, dtype=np.float64)
    if per_channel:
        smallest: np.ndarray = 1.0001 * (2.0 * np.abs(bias)) / qrange
        return smallest
    absmax = np.maximum(
        np.abs(np.minimum(bias.min(), np.array(0, dtype=np.float64))),
        np.abs(np.maximum(bias.max(), np.array(0, dtype=np.float64))),
    )
    return np.asarray(1.0001 * (2.0 * absmax) / qrange)


@dataclass(frozen=True)
class _QuantizedBias:
    """An int32 bias of a Q/DQ model and the scales its quantization multiplies (input x weight x Gemm's beta)."""

    name: str
    input_scale: str
    weight_scale: str
    weight: str
    """The float weight (its int8 values are ``<weight>_quantized``)."""
    axis: int | None
    beta: float


class QdqTemplate:
    """A Q/DQ model that quantize_static made from one float model and one set of ranges, re-parameterized for other
    ranges (and, through ``with_weights``, other weights) under the same settings without another quantize_static call.

    Of a Q/DQ model only three kinds of initializers depend on the activation ranges: each activation's scale and zero
    point, and each int32 bias with its scale (input scale x weight scale). quantize_static spends nearly all its time
    on the weights (per-channel scales and int8 values, channel by channel in Python: EfficientNet-Lite0 2.5 of
    2.7 s), which do not. ``for_ranges`` computes those initializers with ONNX Runtime's own formulas
    (``compute_scale_zp``; the bias as ``quantize_bias_static_impl`` rounds it) and returns None where it cannot be
    sure to match quantize_static: 16-bit tensors, float16 biases, or a bias that needs quantize_static to widen a
    weight scale (int32 overflow). ``build`` keeps a template only when it reproduces its own Q/DQ model exactly;
    ``with_weights`` derives the template of another float model of the same graph (other weights and biases).
    """

    def __init__(self, float_model: onnx.ModelProto, qdq: onnx.ModelProto, settings: StaticSettings) -> None:
        from onnx import TensorProto, numpy_helper

        self.qdq = qdq
        self.settings = settings
        self.float_model = float_model
        initializers = {t.name: t for t in qdq.graph.initializer}
        producers = {out: node for node in qdq.graph.node for out in node.output}
        # activations: the tensor each scale initializer of a QuantizeLinear belongs to (``<tensor>_scale``)
        self.activations: dict[str, str] = {}
        for node in qdq.graph.node:
            if node.op_type == "QuantizeLinear" and node.input[0] not in initializers:
                scale = node.input[1]
                self.activations[scale] = scale.removesuffix("_scale")
        self.zero_points = {
            scale: node.input[2]
            for node in qdq.graph.node
            if node.op_type == "QuantizeLinear" and (scale := node.input[1]) in self.activations
        }
        float_inits = {t.name: t for t in float_model.graph.initializer}
        self.float_biases: dict[str, np.ndarray] = {}
        self.biases: list[_QuantizedBias] = []
        self.supported = True
        consumers = {name: node for node in qdq.graph.node for name in node.input[2:3]}
        for node in qdq.graph.node:
            if node.op_type != "DequantizeLinear" or node.input[0] not in initializers:
                continue
            if initializers[node.input[0]].data_type != TensorProto.INT32:
                continue
            bias = node.output[0]
            user = consumers.get(bias)
            source = float_inits.get(bias)
            if user is None or source is None or source.data_type != TensorProto.FLOAT:
                self.supported = False
                continue
            act, weight = producers.get(user.input[0]), producers.get(user.input[1])
            if (
                act is None
                or weight is None
                or act.op_type != "DequantizeLinear"
                or weight.op_type != "DequantizeLinear"
            ):
                self.supported = False
                continue
            beta = next((a.f for a in user.attribute if a.name == "beta"), 1.0) if user.op_type == "Gemm" else 1.0
            float_weight = weight.input[0].removesuffix("_quantized")
            axis = next((int(a.i) for a in weight.attribute if a.name == "axis"), None)
            if float_weight not in float_inits or weight.input[1] != float_weight + "_scale":
                self.supported = False
                continue
            self.biases.append(
                _QuantizedBias(
                    name=bias,
                    input_scale=act.input[1],
                    weight_scale=weight.input[1],
                    weight=float_weight,
                    axis=axis if numpy_helper.to_array(initializers[weight.input[1]]).size > 1 else None,
                    beta=beta,
                )
            )
            self.float_biases[bias] = numpy_helper.to_array(source)
        self.float_weights = {b.weight: numpy_helper.to_array(float_inits[b.weight]) for b in self.biases}
        self.weight_scales = {b.weight_scale: numpy_helper.to_array(initializers[b.weight_scale]) for b in self.biases}
        self.quantized_weights = {
            b.weight: numpy_helper.to_array(initializers[b.weight + "_quantized"]) for b in self.biases
        }
        self.unadjusted = {b.weight_scale: self._unadjusted_scales(b, initializers) for b in self.biases}
        # quantize_static's range adjustments: a Relu/Clip input read only by it takes its output's range; Softmax [0, 1]
        readers: dict[str, int] = {}
        for node in float_model.graph.node:
            for name in node.input:
                readers[name] = readers.get(name, 0) + 1
        self.adjustments: list[tuple[str, str]] = [
            (node.input[0], node.output[0])
            for node in float_model.graph.node
            if node.op_type in ("Clip", "Relu") and readers.get(node.input[0]) == 1
        ]
        self.softmax = [node.output[0] for node in float_model.graph.node if node.op_type == "Softmax"]

    def _unadjusted_scales(self, bias: _QuantizedBias, initializers: dict[str, onnx.TensorProto]) -> np.ndarray:
        """The weight's per-channel scales before quantize_static widened any for the int32 bias: recomputed with
        ONNX Runtime's ``compute_data_quant_params`` where the template's scale sits at the bias's limit (widened),
        the template's own elsewhere."""
        from onnx import numpy_helper
        from onnxruntime.quantization.quant_utils import compute_data_quant_params

        scales = self.weight_scales[bias.weight_scale].copy()
        if bias.axis is None:
            return scales
        input_scale = np.float64(numpy_helper.to_array(initializers[bias.input_scale]).item())
        limit = _smallest_bias_scales(self.float_biases[bias.name], per_channel=True)
        weight = self.float_weights[bias.weight]
        qtype = _QUANT_TYPE[self.settings.weight_type].tensor_type
        for i in np.flatnonzero(input_scale * scales.astype(np.float64) <= limit * 1.001):
            _zero, scale = compute_data_quant_params(
                weight.take(int(i), bias.axis).ravel(),
                qtype,
                True,
                reduce_range=self.settings.reduce_range,
            )
            scales[i] = scale
        return scales

    def _adjusted_weight(self, bias: _QuantizedBias, input_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The weight's scales and int8 values quantize_static makes when its bias's input has ``input_scale``: a
        channel whose bias scale (input x weight scale) would overflow int32 gets its weight scale widened
        (``_adjust_weight_scale_for_int32_bias``) and its weights quantized again. None: per-tensor weights whose
        scale would be widened (not covered)."""
        from onnxruntime.quantization.quant_utils import quantize_nparray

        unadjusted = self.unadjusted[bias.weight_scale]
        template = self.weight_scales[bias.weight_scale]
        quantized = self.quantized_weights[bias.weight]
        candidate = np.float64(input_scale.item()) * unadjusted.astype(np.float64)
        limit = _smallest_bias_scales(self.float_biases[bias.name], per_channel=bias.axis is not None)
        widen = (candidate < limit) & (candidate > 0.0)
        if bias.axis is None:
            return None if widen.any() else (template, quantized)
        scales = unadjusted.copy()
        scales[widen] = (unadjusted[widen].astype(np.float64) * (limit[widen] / candidate[widen])).astype(scales.dtype)
        changed = np.flatnonzero(scales != template)
        if not len(changed):
            return template, quantized
        quantized = quantized.copy()
        weight = self.float_weights[bias.weight]
        qtype = _QUANT_TYPE[self.settings.weight_type].tensor_type
        for i in changed:
            index: list[slice | int] = [slice(None)] * weight.ndim
            index[bias.axis] = int(i)
            values = quantize_nparray(qtype, weight.take(int(i), bias.axis).ravel(), scales[i], np.int8(0))
            quantized[tuple(index)] = np.asarray(values).reshape(quantized[tuple(index)].shape)
        return scales, quantized

    @classmethod
    def build(
        cls, *, float_path: Path, qdq_path: Path, ranges_path: Path, settings: StaticSettings
    ) -> QdqTemplate | None:
        """The template of ``qdq_path`` (quantize_qdq of ``float_path`` with ``ranges_path`` and ``settings``), or None
        when the settings are outside what ``for_ranges`` covers or it does not reproduce that model exactly."""
        import onnx
        from onnxruntime.quantization import load_tensors_data

        if settings.sixteen_bit_weights or settings.sixteen_bit_activations or settings.keep_float:
            return None
        template = cls(onnx.load(str(float_path)), onnx.load(str(qdq_path)), settings)
        if not template.supported:
            return None
        again = template.for_ranges(load_tensors_data(ranges_path))
        return template if again is not None and _same_initializers(again, template.qdq) else None

    def with_weights(self, float_model: onnx.ModelProto) -> QdqTemplate | None:
        """The template of ``float_model``: the same graph as this template's float model, with other weights and
        biases (adaptive rounding, bias correction, equalization). Each changed weight's scales and int8 values are
        quantize_static's arithmetic on whole arrays (``symmetric_weight_codes``); None where the graph, a shape or
        any other initializer differs, or the weights are not int8."""
        from onnx import numpy_helper

        if self.settings.weight_type is not api.OnnxQuantType.INT8 or list(float_model.graph.node) != list(
            self.float_model.graph.node
        ):
            return None
        before = {t.name: t for t in self.float_model.graph.initializer}
        after = {t.name: t for t in float_model.graph.initializer}
        if before.keys() != after.keys():
            return None
        qdq = onnx.ModelProto()
        qdq.CopyFrom(self.qdq)
        initializers = {t.name: t for t in qdq.graph.initializer}
        axes = {
            node.input[0]: next((int(a.i) for a in node.attribute if a.name == "axis"), None)
            for node in qdq.graph.node
            if node.op_type == "DequantizeLinear"
        }
        for name, tensor in after.items():
            if tensor.SerializeToString() == before[name].SerializeToString():
                continue
            if tensor.data_type != before[name].data_type or list(tensor.dims) != list(before[name].dims):
                return None
            if name in self.float_biases:
                continue
            quantized = name + "_quantized"
            if quantized not in initializers or name + "_scale" not in initializers or quantized not in axes:
                return None
            scales, codes = symmetric_weight_codes(
                numpy_helper.to_array(tensor), axis=axes[quantized], reduce_range=self.settings.reduce_range
            )
            initializers[quantized].CopyFrom(numpy_helper.from_array(codes, quantized))
            initializers[name + "_scale"].CopyFrom(
                numpy_helper.from_array(scales.reshape(tuple(initializers[name + "_scale"].dims)), name + "_scale")
            )
        template = QdqTemplate(float_model, qdq, self.settings)
        return template if template.supported else None

    def for_ranges(self, ranges: TensorsData) -> onnx.ModelProto | None:
        """The Q/DQ model quantize_static makes with ``ranges`` instead (None: not sure to match it, see the class)."""
        import onnx
        from onnx import numpy_helper
        from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

        bounds = {name: data.range_value for name, data in ranges.data.items()}
        for before, after in self.adjustments:
            if before in bounds and after in bounds:
                bounds[before] = bounds[after]
        for name in self.softmax:
            bounds[name] = (np.float32(0.0), np.float32(1.0))
        symmetric = self.settings.symmetric_activations
        qtype = _QUANT_TYPE[self.settings.activation_type].tensor_type
        qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range=False, symmetric=symmetric)
        new: dict[str, np.ndarray] = {}
        for scale_name, tensor in self.activations.items():
            if tensor not in bounds:
                return None
            zero, scale = compute_scale_zp(bounds[tensor][0], bounds[tensor][1], qmin, qmax, symmetric, None)
            new[scale_name] = np.asarray(scale).squeeze()
            new[self.zero_points[scale_name]] = np.asarray(zero).squeeze()
        int32 = np.iinfo(np.int32)
        for bias in self.biases:
            if bias.input_scale not in new:
                return None
            input_scale = new[bias.input_scale].astype(np.float32)
            data = self.float_biases[bias.name]
            adjusted = self._adjusted_weight(bias, input_scale)
            if adjusted is None:
                return None
            weight_scale, new[bias.weight + "_quantized"] = adjusted
            new[bias.weight_scale] = weight_scale
            bias_scale = input_scale * weight_scale * bias.beta
            quantized = np.round(np.asarray(data, dtype=np.float64) / np.asarray(bias_scale, dtype=np.float64))
            new[bias.name + "_quantized"] = (
                np.clip(quantized, np.float64(int32.min), np.float64(int32.max)).astype(np.int32).reshape(data.shape)
            )
            new[bias.name + "_quantized_scale"] = np.asarray(bias_scale, dtype=data.dtype).reshape(-1)
        model = onnx.ModelProto()
        model.CopyFrom(self.qdq)
        for init in model.graph.initializer:
            value = new.get(init.name)
            if value is not None:
                expected = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
                init.CopyFrom(
                    numpy_helper.from_array(np.asarray(value, dtype=expected).reshape(tuple(init.dims)), init.name)
                )
        return model


def symmetric_weight_codes(
    weight: np.ndarray, *, axis: int | None, reduce_range: bool
) -> tuple[np.ndarray, np.ndarray]:
    """quantize_static's symmetric int8 scales (per ``axis`` channel, or one for the tensor) and int8 values of a float
    weight, on whole arrays: ``compute_data_quant_params`` (absmax over the channel, float64 quotient by the grid's
    span, stored as float32; 1.0 below float32's smallest normal) and ``quantize_nparray`` (float32 quotient,
    rounded half to even, clipped to [-128, 127]), element by element the same arithmetic as its per-channel loop."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    w = np.asarray(weight, dtype=np.float32)
    rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) if axis is not None else w.reshape(1, -1)
    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8, reduce_range=reduce_range, symmetric=True)
    low = np.minimum(rows.min(axis=1), np.float32(0))
    high = np.maximum(rows.max(axis=1), np.float32(0))
    absmax = np.maximum(np.abs(low), np.abs(high))
    quotient = (absmax.astype(np.float64) - (-absmax).astype(np.float64)) / (np.float64(qmax) - np.float64(qmin))
    scales = np.where(quotient < np.finfo(np.float32).tiny, np.float32(1.0), quotient.astype(np.float32))
    codes = np.clip((rows / scales[:, None]).round(), -128, 127).astype(np.int8)
    shaped = (
        np.moveaxis(codes.reshape(np.moveaxis(w, axis, 0).shape), 0, axis)
        if axis is not None
        else codes.reshape(w.shape)
    )
    return (scales if axis is not None else scales.reshape(())), np.ascontiguousarray(shaped)


def _same_initializers(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """Both models' initializers hold the same names, types and values."""
    from onnx import numpy_helper

    left = {t.name: t for t in a.graph.initializer}
    right = {t.name: t for t in b.graph.initializer}
    if left.keys() != right.keys():
        return False
    for name, tensor in left.items():
        x, y = numpy_helper.to_array(tensor), numpy_helper.to_array(right[name])
        if tensor.data_type != right[name].data_type or x.shape != y.shape or not np.array_equal(x, y):
            return False
    return True
