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

Quantization is the ONNX Runtime backend's own ``quantize`` with
``keep_float`` (same settings, same artifact naming); the backend calibrates
once per run and re-quantizes from the saved ranges. Node names are those of
the model as the backend quantizes it (after ORT's pre-processing). Models with
nodes kept in float must be run with ``WeightBiasQuantization`` disabled, as
the backend's predictor does (backends/onnxruntime/predictor.py).
onnx and onnxruntime are imported only inside these functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.analysis.layer_tools import rebatch
from edgequant.analysis.sensitivity import LayerProbe, ProbedOp, attribute_increments
from edgequant.analysis.tensor_error import ErrorAccumulator, TensorError
from edgequant.api import v1alpha1 as api
from edgequant.backends.base import QuantizeRequest

#: Folded into the node that feeds them (when it is their only producer).
FOLDED_OPS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "BatchNormalization"})
#: Move or reshape data: quantized with their neighbours, never a layer of their own.
SHAPE_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Shape", "Gather", "Slice", "Split", "Identity", "Cast", "Constant"})
PROBE_BATCH = 64

#: quantize(nodes_kept_in_float) -> the path of a Q/DQ model of ``model_path`` with those nodes in float.
Quantize = Callable[[Sequence[str]], Path]


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
        mine = set(self.nodes_of([layer]))
        return self.quantize([n.name for n in self.nodes if n.name not in mine])

    def model_keeping_float(self, layers: Iterable[str]) -> Path:
        return self.quantize(self.nodes_of(list(layers)))

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


def proxy_for_request(request: QuantizeRequest, backend: Any) -> OrtLayerAnalysis:
    """Layer ranking for a TensorRT INT8 run on the CPU: ONNX Runtime static INT8 of the same ONNX model and data.

    Sensitivity needs a model per layer, and an engine build per layer would hold a GPU for minutes each; ONNX
    Runtime's Q/DQ quantization with the run's calibration algorithm ranks the same ONNX node names on the CPU.
    The pinned artifact itself is still built by TensorRT (``backend`` is not used to build it here).
    """
    from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend

    del backend
    return for_request(dataclasses.replace(request, method=api.Method.ONNX_STATIC), OnnxRuntimeBackend())


def for_request(request: QuantizeRequest, backend: Any) -> OrtLayerAnalysis:
    """The layer tool for an onnx-static run, quantizing through ``backend`` (the run's OnnxRuntimeBackend)."""
    from edgequant.backends.onnxruntime.quantize import prepare_float_model

    if request.calibration is None:
        raise ValueError("onnx-static layer analysis needs calibration data")
    spec = request.spec
    workdir = request.workdir / "layers"
    # The float model exactly as the backend quantizes it (the same deterministic pre-processing): node names refer to it.
    float_model = prepare_float_model(
        request.model_path, workdir=workdir, preprocess=spec.onnx.preprocess, per_channel=spec.onnx.per_channel, contract=spec.model.input
    )

    def quantize(keep_float: Sequence[str]) -> Path:
        return Path(backend.quantize(dataclasses.replace(request, keep_float=list(keep_float))).path)

    return OrtLayerAnalysis(model_path=float_model.path, quantize=quantize, workdir=workdir)
