"""LiteRT (ai_edge_litert) interpreter as a Predictor: XNNPACK for float ops, integer I/O dequantized on the way out."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgequant.api.worker_contract import THREADS_ENV
from edgequant.backends.base import TensorContract, check_batch_matches

#: Interpreter threads; EDGEQUANT_THREADS overrides (edge boards have 4 cores, CI machines 2).
DEFAULT_THREADS = min(4, os.cpu_count() or 1)


def _contract(details: dict) -> TensorContract:
    scale, zero_point = details.get("quantization", (0.0, 0))
    integer = np.issubdtype(np.dtype(details["dtype"]), np.integer)
    return TensorContract(
        dtype=np.dtype(details["dtype"]).name,
        shape=tuple(int(d) for d in details["shape"]),
        scale=float(scale) if integer and scale else None,
        zero_point=int(zero_point) if integer and scale else None,
    )


class TFLitePredictor:
    def __init__(self, path: Path, *, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        threads = num_threads or int(os.environ.get(THREADS_ENV, DEFAULT_THREADS))
        self.path = path
        self.num_threads = threads
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{path.name}: {len(inputs)} inputs / {len(outputs)} outputs; edgequant scores single-input, single-output classifiers"
            )
        self._in, self._out = inputs[0], outputs[0]
        self.input = _contract(self._in)
        self.output = _contract(self._out)
        self._batch = int(self._in["shape"][0])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        check_batch_matches(batch, self.input)
        n = int(batch.shape[0])
        if n != self._batch:
            self._interpreter.resize_tensor_input(self._in["index"], [n, *self.input.shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = n
        self._interpreter.set_tensor(self._in["index"], np.ascontiguousarray(batch))
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._out["index"])
        if self.output.scale is not None and self.output.zero_point is not None:
            return ((out.astype(np.float32) - self.output.zero_point) * self.output.scale).reshape(n, -1)
        return out.astype(np.float32).reshape(n, -1)
