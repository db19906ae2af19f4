"""ONNX Runtime side of sensitivity and mixed precision: one calibration, many re-quantizations, one probe run.

- Layers are ONNX node names. An activation (Relu, Clip, ...) or BatchNormalization
  fed only by a compute node belongs to that node's layer, as the QDQ quantizer
  folds it there; shape ops (Flatten, Reshape, ...) belong to no layer.
- ``model_with_only(layer)``: every other node in ``nodes_to_exclude`` (float I/O
  either way: QDQ models keep float inputs and outputs).
- ``model_keeping_float(layers)``: the onnx-static artifact with those layers'
  nodes excluded (mixed precision).
- ``probe(inputs)``: ORT's qdq_loss_debug: the float and the QDQ model with every
  activation made an output, run on the same inputs, matched by tensor name;
  each layer's own noise is estimated from the cumulative (``xmodel``) errors by
  increments. ``qdq_err`` is not used (notes/quant-stack.md, gotcha 15).

Calibration happens once: ``quantize_static`` writes its tensor ranges to a
calibration cache on the first call and reads them on every later one.
onnx and onnxruntime are imported only inside these functions.

Running a model with nodes kept in float needs one session option: ORT's
``WeightBiasQuantization`` graph optimizer (level 1, ORT >= 1.20) quantizes the
float weights of any Conv/ConvTranspose/Gemm fed by a DequantizeLinear,
per-tensor, when the session is created, which undoes ``nodes_to_exclude``
(measured: the sensitive CNN's pinned conv2 scored 0.49 instead of 0.81).
No graph rewrite survives ORT's other optimizers (Identity, Cast and extra float
neighbours are folded or propagated away), so sessions must be created with
``disabled_optimizers=KEEP_FLOAT_DISABLED_OPTIMIZERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.analysis.layer_tools import rebatch
from edgequant.analysis.sensitivity import LayerProbe, ProbedOp, attribute_increments
from edgequant.analysis.tensor_error import ErrorAccumulator, TensorError
from edgequant.backends.base import QuantizeRequest

#: Folded into the node that feeds them (when it is their only producer).
FOLDED_OPS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "BatchNormalization"})
#: Move or reshape data: quantized with their neighbours, never a layer of their own.
SHAPE_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Shape", "Gather", "Slice", "Split", "Identity", "Cast", "Constant"})
PROBE_BATCH = 64
#: Pass as ``InferenceSession(..., disabled_optimizers=...)`` to run models with nodes kept in float (module docstring).
KEEP_FLOAT_DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)

#: quantize(output_path, nodes_to_exclude) writes a QDQ model of the source with those nodes in float.
Quantize = Callable[[Path, Sequence[str]], None]


@dataclass(frozen=True)
class OnnxNode:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def group_layers(nodes: Sequence[OnnxNode], *, initializers: set[str]) -> dict[str, str | None]:
    """node name -> layer name (None for shape ops). Pure: see the module docstring."""
    producer = {out: n for n in nodes for out in n.outputs}
    consumers: dict[str, int] = {}
    for n in nodes:
        for t in n.inputs:
            consumers[t] = consumers.get(t, 0) + 1
    layer: dict[str, str | None] = {}
    for n in nodes:
        if n.op_type in SHAPE_OPS:
            layer[n.name] = None
            continue
        if n.op_type in FOLDED_OPS:
            activations = [t for t in n.inputs if t and t not in initializers]
            source = producer.get(activations[0]) if len(activations) == 1 else None
            if source is not None and consumers.get(activations[0], 0) == 1 and layer.get(source.name) is not None:
                layer[n.name] = layer[source.name]
                continue
        layer[n.name] = n.name
    return layer


class OrtLayerAnalysis:
    """Per-layer control of one ONNX model's static QDQ quantization."""

    def __init__(self, *, model_path: Path, quantize: Quantize, workdir: Path) -> None:
        import onnx

        self.model_path = model_path
        self.quantize = quantize
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        graph = onnx.load(str(model_path), load_external_data=False).graph
        self.nodes = [
            OnnxNode(name=n.name, op_type=n.op_type, inputs=tuple(n.input), outputs=tuple(n.output)) for n in graph.node
        ]
        unnamed = [n.op_type for n in self.nodes if not n.name]
        if unnamed:
            raise ValueError(f"{model_path.name}: {len(unnamed)} node(s) have no name ({unnamed[:3]}); layers are addressed by node name")
        self.initializers = {i.name for i in graph.initializer}
        self.layer_of = group_layers(self.nodes, initializers=self.initializers)
        self._layers = list(dict.fromkeys(v for v in self.layer_of.values() if v is not None))
        if not self._layers:
            raise ValueError(f"{model_path.name}: no quantizable node")

    @property
    def layers(self) -> list[str]:
        return list(self._layers)

    def nodes_of(self, layers: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(layers))
        unknown = [w for w in wanted if w not in self._layers]
        if unknown:
            raise KeyError(
                f"unknown layer(s) {unknown}: mixedPrecision.pinnedLayers must name ONNX nodes of the model; "
                f"quantizable layers are {self._layers}"
            )
        chosen = set(wanted)
        return [n.name for n in self.nodes if self.layer_of[n.name] in chosen]

    def model_with_only(self, layer: str) -> Path:
        keep = set(self.nodes_of([layer]))
        path = self.workdir / f"{self.model_path.stem}.only-{_slug(layer)}.onnx"
        self.quantize(path, [n.name for n in self.nodes if n.name not in keep])
        return path

    def model_keeping_float(self, layers: Iterable[str]) -> Path:
        keep = list(layers)
        tag = f"qdq-mixed-{len(keep)}" if keep else "qdq"
        path = self.workdir / f"{self.model_path.stem}.{tag}.onnx"
        self.quantize(path, self.nodes_of(keep))
        return path

    def probe(self, inputs: Iterable[np.ndarray], *, max_samples: int = 256) -> list[LayerProbe]:
        """Float vs fully quantized QDQ model on the same inputs (qdq_loss_debug), own noise by increments."""
        from onnxruntime.quantization import qdq_loss_debug

        quantized = self.model_keeping_float([])
        batches = [{self._input_name(): b} for b in rebatch(inputs, PROBE_BATCH, max_samples)]
        if not batches:
            raise ValueError("no inputs to probe the model with")
        activations = {}
        for role, path in (("float", self.model_path), ("qdq", quantized)):
            augmented = self.workdir / f"{path.stem}.probe.onnx"
            qdq_loss_debug.modify_model_output_intermediate_tensors(str(path), str(augmented))
            activations[role] = qdq_loss_debug.collect_activations(str(augmented), iter(batches))
        matched = qdq_loss_debug.create_activation_matching(activations["qdq"], activations["float"])
        errors: dict[str, TensorError] = {}
        for tensor, match in matched.items():
            if "float" not in match:
                continue
            acc = ErrorAccumulator()
            for ref, test in zip(match["float"], match["post_qdq"]):
                acc.add(ref, test)
            errors[tensor] = acc.result()
        ops = [ProbedOp(layer=self.layer_of[n.name], inputs=tuple(t for t in n.inputs if t not in self.initializers), output=n.outputs[0]) for n in self.nodes]
        return attribute_increments(ops=ops, errors=errors)

    def _input_name(self) -> str:
        import onnx

        graph = onnx.load(str(self.model_path), load_external_data=False).graph
        names = [i.name for i in graph.input if i.name not in self.initializers]
        if len(names) != 1:
            raise ValueError(f"{self.model_path.name}: {len(names)} inputs; edgequant probes single-input models")
        return names[0]


def for_request(request: QuantizeRequest) -> OrtLayerAnalysis:
    """The layer tool for an onnx-static run: the spec's calibration settings, calibrated once (cache)."""
    if request.calibration is None:
        raise ValueError("onnx-static layer analysis needs calibration data")
    workdir = request.workdir / "layers"
    workdir.mkdir(parents=True, exist_ok=True)
    return OrtLayerAnalysis(model_path=request.model_path, quantize=static_quantizer(request, cache=workdir / "calibration.json"), workdir=workdir)


def static_quantizer(request: QuantizeRequest, *, cache: Path) -> Quantize:
    """QDQ static quantization with the spec's calibration algorithm; ranges computed on the first call only."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgequant.api import v1alpha1 as api

    spec = request.spec.calibration
    method = {
        api.CalibrationAlgorithm.MINMAX: CalibrationMethod.MinMax,
        api.CalibrationAlgorithm.ENTROPY: CalibrationMethod.Entropy,
        api.CalibrationAlgorithm.PERCENTILE: CalibrationMethod.Percentile,
    }[spec.algorithm if spec else api.CalibrationAlgorithm.MINMAX]
    extra: dict[str, Any] = {"CalibPercentile": spec.percentile} if spec and method is CalibrationMethod.Percentile else {}
    calibration = request.calibration
    assert calibration is not None

    def quantize(output: Path, nodes_to_exclude: Sequence[str]) -> None:
        reader = None if cache.is_file() else _Reader(calibration, input_name=_model_input(request.model_path))
        quantize_static(
            str(request.model_path), str(output), reader,
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
            nodes_to_exclude=list(nodes_to_exclude), extra_options=extra, calibration_cache_path=cache,
        )

    return quantize


class _Reader:
    """A CalibrationDataReader over the worker's preprocessed batches."""

    def __init__(self, batches: Any, *, input_name: str) -> None:
        self._iter = iter(batches)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self._name: np.ascontiguousarray(batch[0], dtype=np.float32)}

    def __iter__(self) -> "_Reader":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _model_input(path: Path) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return next(i.name for i in graph.input if i.name not in inits)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]

