"""TFLite side of sensitivity and mixed precision: one calibration, many cheap re-quantizations, one probe run.

- ``model_with_only(layer)``: every op denylisted except that layer's (float I/O),
  for the exhaustive ranking.
- ``model_keeping_float(layers)``: the shipped uint8-I/O INT8 model with those
  layers' ops left in float (mixed precision).
- ``probe(inputs)``: the debug models with NumericVerify ops, run on real
  inputs. Layer-wise: each quantized op against its float twin fed the same
  quantized-path input (the layer's own error, which the fast ranking uses);
  whole-model: against a float shadow graph (the cumulative error, reported).

TensorFlow is imported only inside these functions (via the TFLite backend).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.analysis.layer_tools import rebatch
from edgequant.analysis.sensitivity import LayerProbe
from edgequant.analysis.tensor_error import ErrorAccumulator, TensorError
from edgequant.backends.base import QuantizeRequest
from edgequant.backends.tflite import layers as tl
from edgequant.util.memory import DEFAULT_BUDGET_BYTES, probe_batch_size


class TFLiteLayerAnalysis:
    """Per-layer control of one model's full-INT8 conversion, named in source layer names."""

    def __init__(
        self,
        *,
        calibrated: bytes,
        layer_map: tl.LayerMap,
        workdir: Path,
        stem: str = "model",
        source_float: bytes | None = None,
    ) -> None:
        self.calibrated = calibrated
        self.source_float = source_float
        """The source model's float conversion when spec.ptq tuned the calibrated model's weights: layers kept in
        float take their constants from it (``layers.with_source_weights``), as the backend's pinned artifact does."""
        self.layer_map = layer_map
        self.workdir = workdir
        self.stem = stem
        """File-name stem of the models written, like the backend's artifacts: <stem>.int8-mixed-1.tflite."""
        self.last_batch_size = 0
        """Samples per batch of the last probe (the sizing rule's answer), for logs and tests."""
        workdir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def prepare(
        cls, *, converter: Any, keras_model: Any | None, workdir: Path, stem: str = "model"
    ) -> TFLiteLayerAnalysis:
        """Calibrate with a converter already configured for tflite-int8 (representative data set)."""
        calibrated = tl.calibrate(converter)
        layer_map = tl.map_layers(calibrated, keras_model=keras_model)
        if not layer_map.layers:
            raise ValueError("the converted model has no quantizable layer")
        return cls(calibrated=calibrated, layer_map=layer_map, workdir=workdir, stem=stem)

    @property
    def layers(self) -> list[str]:
        return list(self.layer_map.layers)

    def _quantized_keeping(self, nodes: list[str], io_dtype: str) -> bytes:
        calibrated = tl.with_source_weights(self.calibrated, self.source_float, nodes) or self.calibrated
        return tl.quantize_calibrated(calibrated, keep_float_nodes=nodes, io_dtype=io_dtype)

    def model_with_only(self, layer: str) -> Path:
        model = self._quantized_keeping(self.layer_map.nodes_except(layer), "float32")
        return self._write(f"{self.stem}.only-{_slug(layer)}.tflite", model)

    def model_keeping_float(self, layers: Iterable[str], *, io_dtype: str = "uint8") -> Path:
        keep = list(layers)
        model = self._quantized_keeping(self.layer_map.nodes_of(keep), io_dtype)
        # One file per number of pinned layers while searching, named like the backend's artifacts.
        tag = f"int8-mixed-{len(keep)}" if keep else "int8"
        return self._write(f"{self.stem}.{tag}.tflite", model)

    def probe(
        self, inputs: Iterable[np.ndarray], *, max_samples: int = 256, memory_budget: int = DEFAULT_BUDGET_BYTES
    ) -> list[LayerProbe]:
        """Two debug models on the same float inputs: layer-wise (own error) and whole-model (cumulative error).

        Streamed: both run on each batch, whose NumericVerify pairs are folded
        into running sums; the batch size follows ``memory_budget``
        (``util.memory.probe_batch_size``; the debug interpreters keep every tensor).
        """
        local, whole = self._verifier(whole_model=False), self._verifier(whole_model=True)
        per_sample = local.bytes_per_sample() + whole.bytes_per_sample()
        self.last_batch_size = probe_batch_size(budget_bytes=memory_budget, bytes_per_sample=per_sample)
        seen = 0
        for batch in rebatch(inputs, self.last_batch_size, max_samples):
            local.add(batch)
            whole.add(batch)
            seen += len(batch)
        if not seen:
            raise ValueError("no inputs to probe the model with")
        own: dict[str, float] = {}
        for layer, error in local.result():
            own[layer] = own.get(layer, 0.0) + error.noise_to_signal
        output = dict(whole.result())  # the layer's last op wins: its output
        return [
            LayerProbe(layer=layer, own_noise=own[layer], output=output.get(layer))
            for layer in self.layers
            if layer in own
        ]

    def _verifier(self, *, whole_model: bool) -> _Verifier:
        """The debug model's interpreter and its NumericVerify pairs, each named by its source layer."""
        from ai_edge_litert.interpreter import Interpreter

        debug = tl.quantize_calibrated(self.calibrated, debug=True, whole_model=whole_model)
        with warnings.catch_warnings():  # "intended for debugging purposes only": that is what it is for here
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            interpreter = Interpreter(model_content=debug, experimental_preserve_all_tensors=True)
        details = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
        pairs = [(int(op["inputs"][0]), int(op["inputs"][1])) for op in details if op["op_name"] == "NumericVerify"]
        if not pairs:
            raise ValueError("the debug model has no NumericVerify ops: nothing was quantized")
        producer = {int(out): op for op in details for out in op["outputs"]}
        reference = [(lop.op.kind, lop.layer) for lop in self.layer_map.ops]
        layers = align_by_kind(reference=reference, probed=[str(producer[q]["op_name"]) for q, _f in pairs])
        return _Verifier(interpreter=interpreter, pairs=pairs, layers=layers, quantizable=set(self.layer_map.layers))

    def _write(self, name: str, model: bytes) -> Path:
        path = self.workdir / name
        path.write_bytes(model)
        return path


class _Verifier:
    """One debug interpreter fed batch by batch; per NumericVerify pair, running error sums (nothing else kept)."""

    def __init__(
        self, *, interpreter: Any, pairs: list[tuple[int, int]], layers: list[str | None], quantizable: set[str]
    ) -> None:
        self.interpreter = interpreter
        self.pairs = pairs
        self.layers = layers
        self.quantizable = quantizable
        self.accumulators = [ErrorAccumulator() for _ in pairs]
        self.input = interpreter.get_input_details()[0]

    def _allocated_bytes(self, batch: int) -> int:
        self.interpreter.resize_tensor_input(self.input["index"], [batch, *self.input["shape"][1:]])
        self.interpreter.allocate_tensors()
        return sum(
            int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize for t in self.interpreter.get_tensor_details()
        )

    def bytes_per_sample(self) -> int:
        """What one more sample adds to the interpreter's tensors (every one is kept), from their shapes."""
        return max(0, self._allocated_bytes(2) - self._allocated_bytes(1))

    def add(self, batch: np.ndarray) -> None:
        interpreter = self.interpreter
        interpreter.resize_tensor_input(self.input["index"], list(batch.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(self.input["index"], batch.astype(np.float32))
        interpreter.invoke()
        for acc, (q, f) in zip(self.accumulators, self.pairs):
            acc.add(interpreter.get_tensor(f), _dequantized(interpreter, q))

    def result(self) -> list[tuple[str, TensorError]]:
        """(layer, error) per NumericVerify op of the debug model, in graph order."""
        return [
            (layer, acc.result())
            for layer, acc in zip(self.layers, self.accumulators)
            if layer is not None and layer in self.quantizable
        ]


def align_by_kind(*, reference: Sequence[tuple[str, str | None]], probed: Sequence[str]) -> list[str | None]:
    """Source layer of each verified op of a debug model, from the calibrated model's ops.

    The quantizer keeps op order and kinds, but debug models rename tensors
    (suffixes, float shadows) differently in each mode; the k-th verified op of
    a kind is the k-th op of that kind in the calibrated model.
    """
    queues: dict[str, list[str | None]] = {}
    for kind, layer in reference:
        queues.setdefault(kind, []).append(layer)
    taken: dict[str, int] = {}
    out: list[str | None] = []
    for kind in probed:
        i = taken.get(kind, 0)
        taken[kind] = i + 1
        queue = queues.get(kind, [])
        out.append(queue[i] if i < len(queue) else None)
    return out


def for_request(request: QuantizeRequest, backend: Any) -> TFLiteLayerAnalysis:
    """The layer tool for a tflite-int8 run, from the calibrated model the backend made for the quantize stage."""
    if request.calibration is None:
        raise ValueError("tflite-int8 layer analysis needs calibration data")
    calibrated = backend.calibrated(request)
    layer_map = tl.map_layers(calibrated, keras_model=backend.source(request).keras_model)
    if not layer_map.layers:
        raise ValueError("the converted model has no quantizable layer")
    return TFLiteLayerAnalysis(
        calibrated=calibrated,
        layer_map=layer_map,
        workdir=request.workdir / "layers",
        stem=request.model_path.stem,
        source_float=backend.pinned_weights_source(request),
    )


def _dequantized(interpreter: Any, index: int) -> np.ndarray:
    value = interpreter.get_tensor(index)
    detail = interpreter._get_tensor_details(index, 0)
    params = detail["quantization_parameters"]
    if np.issubdtype(value.dtype, np.integer) and len(params["scales"]):
        scale = params["scales"].astype(np.float32)
        zero = params["zero_points"].astype(np.float32)
        if scale.size > 1:  # per-axis activations are rare; broadcast along the quantized dimension
            shape = [1] * value.ndim
            shape[int(params["quantized_dimension"])] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (value.astype(np.float32) - zero) * scale
    return value.astype(np.float32)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
