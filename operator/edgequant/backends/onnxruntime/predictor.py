"""An ONNX model (float or Q/DQ) on ONNX Runtime's CPU provider, as a Predictor.

The session runs with ORT's default graph optimizations, as a deployment
would, so Q/DQ pairs are fused into int8 kernels and the scores are those of
the int8 model, with one exception: ``WeightBiasQuantization`` (ORT >= 1.20)
quantizes, per tensor, the float weights of every Conv/ConvTranspose/Gemm fed
by a DequantizeLinear, which undoes nodes kept in float (mixed precision);
it is disabled (``KEEP_FLOAT_DISABLED_OPTIMIZERS``, see docs/analysis.md). A model with a fixed batch dimension is fed in chunks of
that size (the last one padded, its padding dropped from the outputs).

``reference=True`` runs the graph op by op (no optimizations): a Q/DQ model is
then dequantized and computed with float kernels, the numerics the
quantization itself defines. Those do not depend on the CPU's int8 kernels
(u8s8 saturation without VNNI), so they are what accuracy bounds of a
quantization method are stated against.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgequant.api.worker_contract import THREADS_ENV
from edgequant.backends.base import TensorContract, check_batch_matches

#: Graph optimizers a session must skip so that nodes kept in float stay float (module docstring).
KEEP_FLOAT_DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)
#: Intra-op threads; EDGEQUANT_THREADS overrides (edge boards have 4 cores, CI machines 2).
DEFAULT_THREADS = min(4, os.cpu_count() or 1)


def session(path: Path, *, threads: int | None = None, reference: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if reference:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads or int(os.environ.get(THREADS_ENV, DEFAULT_THREADS))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT warns about every unused initializer it removes
    return ort.InferenceSession(
        str(path),
        sess_options=options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(KEEP_FLOAT_DISABLED_OPTIMIZERS),
    )


class OrtPredictor:
    def __init__(self, path: Path, *, threads: int | None = None, reference: bool = False) -> None:
        self.path = path
        self._session = session(path, threads=threads, reference=reference)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{path.name}: {len(inputs)} inputs / {len(outputs)} outputs; edgequant scores single-input, single-output classifiers"
            )
        first = inputs[0]
        self._name = first.name
        shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in first.shape)
        self._fixed_batch = shape[0] if shape and shape[0] > 0 else None
        dtype = {
            "tensor(float)": "float32",
            "tensor(float16)": "float16",
            "tensor(uint8)": "uint8",
            "tensor(int8)": "int8",
        }.get(first.type, "float32")
        self.input = TensorContract(dtype=dtype, shape=shape)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        check_batch_matches(batch, self.input)
        n = int(batch.shape[0])
        size = self._fixed_batch
        if size is None or n == size:
            out = self._session.run(None, {self._name: np.ascontiguousarray(batch)})[0]
            return np.asarray(out, dtype=np.float32).reshape(n, -1)
        parts = []
        for start in range(0, n, size):
            chunk = batch[start : start + size]
            padded = np.resize(chunk, (size, *chunk.shape[1:])) if len(chunk) < size else chunk
            out = self._session.run(None, {self._name: np.ascontiguousarray(padded)})[0]
            parts.append(np.asarray(out, dtype=np.float32).reshape(size, -1)[: len(chunk)])
        return np.concatenate(parts)
