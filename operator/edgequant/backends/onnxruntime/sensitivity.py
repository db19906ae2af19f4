"""ONNX Runtime side of sensitivity and mixed precision: one calibration, many re-quantizations, one probe run.

- Layers are ONNX node names. An activation (Relu, Clip, ...) or BatchNormalization
  fed only by a compute node belongs to that node's layer, as the QDQ quantizer
  folds it there; shape ops (Flatten, Reshape, ...) belong to no layer.
- ``model_with_only(layer)``: every other node in ``nodes_to_exclude`` (float I/O
  either way: QDQ models keep float inputs and outputs).
- ``model_keeping_float(layers)``: the onnx-static artifact with those layers'
  nodes excluded (mixed precision).
- ``probe(inputs)``: the float and the QDQ model with the compared activations
  made outputs (paired by name as ORT's qdq_loss_debug pairs them), run batch by
  batch on the same inputs; each batch is folded into running error sums and
  dropped, and the batch size follows the memory budget (``util.memory``).
  Each layer's own noise is estimated from the cumulative (``xmodel``) errors by
  increments. ``qdq_err`` is not used (docs/analysis.md).

Quantization is the ONNX Runtime backend's own ``quantize`` with
``keep_float`` (same settings, same artifact naming); the backend calibrates
once per run and re-quantizes from the saved ranges. Node names are those of
the backend's own pre-processed float model. Models with
nodes kept in float must be run with ``WeightBiasQuantization`` disabled, as
the backend's predictor does (backends/onnxruntime/predictor.py).
onnx and onnxruntime are imported only inside these functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.analysis.layer_tools import rebatch
from edgequant.analysis.sensitivity import LayerProbe, ProbedOp, attribute_increments
from edgequant.analysis.tensor_error import ErrorAccumulator, TensorError
from edgequant.api.backend_options import TensorRTBackendOptions
from edgequant.backends.base import QuantizeRequest
from edgequant.backends.onnx_graph import OnnxNode, read_graph
from edgequant.util.memory import DEFAULT_BUDGET_BYTES, probe_batch_size, tensor_bytes_per_sample

#: Folded into the node that feeds them (when it is their only producer).
FOLDED_OPS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "BatchNormalization"})
#: Move or reshape data: quantized with their neighbours, never a layer of their own.
SHAPE_OPS = frozenset(
    {
        "Flatten",
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Shape",
        "Gather",
        "Slice",
        "Split",
        "Identity",
        "Cast",
        "Constant",
    }
)
#: ONNX Runtime's Q/DQ tensor naming (onnxruntime.quantization.quant_utils), read by ``match_tensors``.
QUANT_INPUT_SUFFIX = "_QuantizeLinear_Input"
DEQUANT_OUTPUT_SUFFIX = "_DequantizeLinear_Output"

#: quantize(nodes_kept_in_float) -> the path of a Q/DQ model of ``model_path`` with those nodes in float.
Quantize = Callable[[Sequence[str]], Path]


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
        self.model_path = model_path
        self.quantize = quantize
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.graph = read_graph(model_path, fix="layer analysis reads the backend's own float model")
        self.nodes = list(self.graph.nodes)
        unnamed = [n.op_type for n in self.nodes if not n.name]
        if unnamed:
            raise ValueError(
                f"{model_path.name}: {len(unnamed)} node(s) have no name ({unnamed[:3]}); layers are addressed by node name"
            )
        self.initializers = set(self.graph.initializers)
        self.layer_of = group_layers(self.nodes, initializers=self.initializers)
        self._layers = list(dict.fromkeys(v for v in self.layer_of.values() if v is not None))
        self.last_batch_size = 0
        """Samples per batch of the last probe (the sizing rule's answer), for logs and tests."""
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

    def probe(
        self, inputs: Iterable[np.ndarray], *, max_samples: int = 256, memory_budget: int = DEFAULT_BUDGET_BYTES
    ) -> list[LayerProbe]:
        """Float vs fully quantized QDQ model on the same inputs, streamed batch by batch; own noise by increments.

        Both models run with only the compared tensors exposed; each batch's
        tensors are folded into running sums (``ErrorAccumulator``) and dropped
        before the next batch, whose size follows ``memory_budget``
        (``util.memory.probe_batch_size``).
        """
        import onnx

        from edgequant.backends.onnxruntime.model import activation_shapes

        float_model = _with_shapes(onnx.load(str(self.model_path)))
        qdq_model = _with_shapes(onnx.load(str(self.model_keeping_float([]))))
        float_tensors = activation_shapes(float_model)
        pairs = match_tensors(float_tensors=float_tensors, qdq_tensors=activation_shapes(qdq_model))
        if not pairs:
            raise ValueError(
                f"{self.model_path.name}: no activation of the float model has a Q/DQ counterpart to compare"
            )
        input_name, fixed_batch = self._input()
        float_session = _session(float_model, list(pairs))
        qdq_session = _session(qdq_model, list(pairs.values()))
        del float_model, qdq_model
        sizes = [tensor_bytes_per_sample(float_tensors[t], 4) for t in pairs]
        per_sample = 2 * sum(s for s in sizes if s is not None) if all(s is not None for s in sizes) else None
        accumulators = {tensor: ErrorAccumulator() for tensor in pairs}

        def run(batch: np.ndarray) -> int:
            reference = float_session.run(list(pairs), {input_name: batch})
            held = sum(r.nbytes for r in reference)
            quantized = qdq_session.run(list(pairs.values()), {input_name: batch})
            held += sum(q.nbytes for q in quantized)
            for acc, ref, test in zip(accumulators.values(), reference, quantized):
                acc.add(ref, test)
            return held

        samples = iter(rebatch(inputs, 1, max_samples))
        if per_sample is None:  # a dimension besides the batch is unknown: measure one sample
            first = next(samples, None)
            if first is None:
                raise ValueError("no inputs to probe the model with")
            per_sample = run(_fit(first, fixed_batch)) // (fixed_batch or 1)
        batch_size = fixed_batch or probe_batch_size(budget_bytes=memory_budget, bytes_per_sample=per_sample)
        self.last_batch_size = batch_size
        for batch in rebatch(samples, batch_size, max_samples):
            run(_fit(batch, fixed_batch))
        if all(acc.count == 0 for acc in accumulators.values()):
            raise ValueError("no inputs to probe the model with")
        errors: dict[str, TensorError] = {t: acc.result() for t, acc in accumulators.items() if acc.count}
        ops = [
            ProbedOp(
                layer=self.layer_of[n.name],
                inputs=tuple(t for t in n.inputs if t not in self.initializers),
                output=n.outputs[0],
            )
            for n in self.nodes
        ]
        return attribute_increments(ops=ops, errors=errors)

    def _input(self) -> tuple[str, int | None]:
        """The model's one input and its fixed batch size (None when the batch dimension is free)."""
        inputs = self.graph.inputs
        if len(inputs) != 1:
            raise ValueError(f"{self.model_path.name}: {len(inputs)} inputs; edgequant probes single-input models")
        first = inputs[0].shape[0] if inputs[0].shape else None
        return inputs[0].name, first if isinstance(first, int) else None


def match_tensors(*, float_tensors: Iterable[str], qdq_tensors: Iterable[str]) -> dict[str, str]:
    """Float model tensor -> the QDQ model tensor holding its dequantized value, as ORT's qdq_loss_debug pairs them.

    A tensor ``X`` quantized in place reads ``X_DequantizeLinear_Output`` (or ``..._1``);
    one renamed by the quantizer (a graph output) keeps its name after the Q/DQ pair
    and reads ``X`` itself when ``X_QuantizeLinear_Input`` exists. Pure.
    """
    qdq = set(qdq_tensors)
    pairs: dict[str, str] = {}
    for name in float_tensors:
        if name + QUANT_INPUT_SUFFIX in qdq and name in qdq:
            pairs[name] = name
            continue
        for post in (name + DEQUANT_OUTPUT_SUFFIX, name + DEQUANT_OUTPUT_SUFFIX + "_1"):
            if post in qdq and name in qdq:
                pairs[name] = post
                break
    return pairs


def _with_shapes(model: Any) -> Any:
    import onnx

    return onnx.shape_inference.infer_shapes(model)


def _session(model: Any, outputs: Sequence[str]) -> Any:
    """An ONNX Runtime session with ``outputs`` exposed, unoptimized (every compared tensor stays in the graph) and
    without the CPU arena (a batch's buffers go back to the system instead of staying reserved)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = model.graph
    present = {o.name for o in graph.output}
    for name in outputs:
        if name not in present:
            graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            present.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


def _fit(batch: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """A batch completed to the model's fixed batch size with its own samples repeated (as calibration does)."""
    if fixed_batch is None or len(batch) == fixed_batch:
        return batch
    return np.ascontiguousarray(np.resize(batch, (fixed_batch, *batch.shape[1:])))


def proxy_for_request(request: QuantizeRequest, backend: Any) -> OrtLayerAnalysis:
    """Layer ranking for a TensorRT INT8 run on the CPU: ONNX Runtime static INT8 of the same ONNX model and data.

    Sensitivity needs a model per layer, and an engine build per layer would hold a GPU for minutes each; ONNX
    Runtime's Q/DQ quantization with the run's calibration algorithm ranks the same ONNX node names on the CPU,
    without spec.ptq's techniques (TensorRT quantizes the model as it is). The pinned artifact itself is still
    built by TensorRT (``backend`` is not used to build it here).
    """
    from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend

    del backend  # the run's TensorRT backend; ranking runs through ONNX Runtime's
    ranking = request.options.layer_ranking if isinstance(request.options, TensorRTBackendOptions) else None
    if ranking is None:
        raise ValueError(f"{request.method.value} names no ONNX Runtime options to rank its layers with")
    return for_request(dataclasses.replace(request, options=ranking), OnnxRuntimeBackend())


def for_request(request: QuantizeRequest, backend: Any) -> OrtLayerAnalysis:
    """The layer tool for an onnx-static run, quantizing through ``backend`` (the run's OnnxRuntimeBackend).

    The float model is the backend's own pre-processed one (node names refer to it), as spec.ptq left its
    function (equalized channels, original biases), and every quantization reuses the ranges the backend
    calibrated for the quantize stage.
    """
    if request.calibration is None:
        raise ValueError("onnx-static layer analysis needs calibration data")
    reference = backend.reference_float_model(request)

    def quantize(keep_float: Sequence[str]) -> Path:
        return Path(backend.quantize(dataclasses.replace(request, keep_float=list(keep_float))).path)

    return OrtLayerAnalysis(model_path=reference, quantize=quantize, workdir=request.workdir / "layers")
