"""Running a built engine: the Predictor the evaluator scores and times. Needs TensorRT, pycuda and a GPU.

Uses the name-based tensor API shared by TensorRT 8.5+ and 10.x
(num_io_tensors, get_tensor_name/mode/shape/dtype, set_input_shape,
set_tensor_address, execute_async_v3). Batches larger than the engine's
profile maximum are split; a fixed-batch engine gets zero padding that is
dropped from the outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgequant.backends.base import TensorContract, check_batch_matches
from edgequant.util.errors import EdgequantError


class EngineRuntimeError(EdgequantError):
    """A built engine failed to load or run."""


class EnginePredictor:
    """One deserialized engine, its context, a stream and device buffers sized for its largest batch."""

    def __init__(self, path: Path, *, trt: Any = None, cuda: Any = None) -> None:
        if trt is None:
            import tensorrt

            trt = tensorrt
        if cuda is None:
            import pycuda.autoprimaryctx  # makes the primary CUDA context current on import
            import pycuda.driver

            cuda = pycuda.driver
        self._trt, self._cuda = trt, cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineRuntimeError(
                f"{path.name}: TensorRT could not deserialize the engine (built by another TensorRT version or GPU?)"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not self._outputs:
            raise EngineRuntimeError(
                f"{path.name}: expected one input and at least one output, found {inputs} / {self._outputs}"
            )
        self._input = inputs[0]
        dims = tuple(int(d) for d in self.engine.get_tensor_shape(self._input))
        self._sample = dims[1:]
        self._dynamic = dims[0] < 0
        if self._dynamic:
            _min, _opt, largest = self.engine.get_tensor_profile_shape(self._input, 0)
            self.max_batch = int(largest[0])
        else:
            self.max_batch = dims[0]
        self._dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._input)))
        self.input = TensorContract(dtype=self._dtype.name, shape=(dims[0] if not self._dynamic else -1, *self._sample))
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self._set_batch(self.max_batch)
        self._device: dict[str, Any] = {}
        self._host: dict[str, np.ndarray] = {}
        for name in [self._input, *self._outputs]:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self._device[name] = cuda.mem_alloc(max(nbytes, 1))
            if name != self._input:
                self._host[name] = cuda.pagelocked_empty(shape, dtype)
        for name, allocation in self._device.items():
            self.context.set_tensor_address(name, int(allocation))

    def _set_batch(self, n: int) -> None:
        if self._dynamic and not self.context.set_input_shape(self._input, (n, *self._sample)):
            raise EngineRuntimeError(f"the engine rejected input shape {[n, *self._sample]}")

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        cuda = self._cuda
        n = len(chunk)
        if not self._dynamic and n < self.max_batch:
            padded = np.zeros((self.max_batch, *self._sample), dtype=self._dtype)
            padded[:n] = chunk
            chunk = padded
        self._set_batch(len(chunk))
        cuda.memcpy_htod_async(self._device[self._input], np.ascontiguousarray(chunk, dtype=self._dtype), self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise EngineRuntimeError("execute_async_v3 failed (see the TensorRT log)")
        out = self._outputs[0]
        shape = tuple(int(d) for d in self.context.get_tensor_shape(out))
        host = self._host[out]
        view = host.reshape(-1)[: int(np.prod(shape))].reshape(shape)
        cuda.memcpy_dtoh_async(view, self._device[out], self.stream)
        self.stream.synchronize()
        return np.array(view[:n], dtype=np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        check_batch_matches(batch, self.input)
        parts = [self._run(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        return np.concatenate(parts).reshape(len(batch), -1)

    def gpu_latency_ms(self, sample: np.ndarray, *, runs: int = 50, warmup: int = 5) -> float:
        """Median device time of one execute_async_v3 on ``sample`` (CUDA events; excludes host copies)."""
        cuda = self._cuda
        self._set_batch(len(sample))
        cuda.memcpy_htod(self._device[self._input], np.ascontiguousarray(sample, dtype=self._dtype))
        start, end = cuda.Event(), cuda.Event()
        timings = []
        for i in range(warmup + runs):
            start.record(self.stream)
            self.context.execute_async_v3(self.stream.handle)
            end.record(self.stream)
            end.synchronize()
            if i >= warmup:
                timings.append(end.time_since(start))
        return float(np.median(timings))
