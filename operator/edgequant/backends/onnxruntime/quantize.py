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
    return output_path


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
