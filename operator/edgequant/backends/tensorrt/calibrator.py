"""Implicit INT8 calibration: fixed-size batches from the shared data pipeline into device memory, and the cache.

``fixed_batches`` regroups the pipeline's batches into exactly the calibration
batch size, in data order, padding the last one with the first samples of the
set, so the batch count (ceil(N / batch)) and the bytes of every batch are
deterministic. ``CalibrationSession`` holds what TensorRT's calibrator
callbacks need (device buffer, batches, cache bytes) and records errors instead
of raising them through TensorRT. ``make_calibrator`` subclasses the TensorRT
calibrator class (imported by the caller) and delegates to a session; it is the
only part that needs TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgequant.backends.base import Batches
from edgequant.util.errors import InvalidInputError


class DeviceBuffer(Protocol):
    @property
    def ptr(self) -> int:
        """The device address TensorRT reads."""
        ...


class DeviceAllocator(Protocol):
    """Device memory for calibration batches; pycuda in production, injectable for tests."""

    def allocate(self, nbytes: int) -> DeviceBuffer: ...

    def copy_to_device(self, buffer: DeviceBuffer, host: np.ndarray) -> None: ...

    def release(self, buffer: DeviceBuffer) -> None: ...


class CalibrationDataError(InvalidInputError):
    """The calibration data does not fit the network input."""


@dataclass(frozen=True)
class HostBatch:
    index: int
    data: np.ndarray
    """[batch_size, *sample_shape], C-contiguous, the dtype TensorRT reads."""
    real: int
    """Samples from the data set; the rest (batch_size - real) are padding."""


def batch_count(samples: int, batch_size: int) -> int:
    return math.ceil(samples / batch_size)


def fixed_batches(
    batches: Iterable[np.ndarray],
    *,
    batch_size: int,
    sample_shape: Sequence[int],
    dtype: np.dtype[Any] = np.dtype(np.float32),
) -> Iterator[HostBatch]:
    """Samples regrouped into batches of exactly ``batch_size``, in order; the last padded with the set's first samples.

    Padding repeats real, representative samples (never zeros, which would
    skew ranges and histograms); a set smaller than one batch is cycled.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    shape = tuple(int(d) for d in sample_shape)
    head: list[np.ndarray] = []
    head_count = 0
    buffer = np.empty((batch_size, *shape), dtype=dtype)
    fill = 0
    index = 0
    for chunk in batches:
        chunk = np.asarray(chunk)
        if chunk.shape[1:] != shape:
            raise CalibrationDataError(
                f"calibration samples have shape {list(chunk.shape[1:])}, the network input takes {list(shape)} per sample: "
                "check model.input (layout nchw/nhwc, height, width, channels) against the ONNX model's input"
            )
        if head_count < batch_size:
            take = chunk[: batch_size - head_count]
            head.append(np.array(take, dtype=dtype))
            head_count += len(take)
        start = 0
        while start < len(chunk):
            n = min(batch_size - fill, len(chunk) - start)
            buffer[fill : fill + n] = chunk[start : start + n]
            fill += n
            start += n
            if fill == batch_size:
                yield HostBatch(index=index, data=buffer.copy(), real=batch_size)
                index += 1
                fill = 0
    if fill:
        pool = np.concatenate(head) if head else np.empty((0, *shape), dtype=dtype)
        real = fill
        position = 0
        while fill < batch_size:
            n = min(batch_size - fill, len(pool) - position)
            buffer[fill : fill + n] = pool[position : position + n]
            fill += n
            position = (position + n) % len(pool)
        yield HostBatch(index=index, data=buffer.copy(), real=real)


@dataclass(frozen=True)
class CalibrationManifest:
    """What calibration reads, exactly: hashes of the padded batches as they reach the device."""

    input_name: str
    batch_shape: tuple[int, ...]
    dtype: str
    samples: int
    batches: int
    padded: int
    batch_sha256: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "inputName": self.input_name,
            "batchShape": list(self.batch_shape),
            "dtype": self.dtype,
            "samples": self.samples,
            "batches": self.batches,
            "padded": self.padded,
            "batchSha256": list(self.batch_sha256),
        }

    @property
    def sha256(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _host_batches(batches: Batches, *, batch_size: int, sample_shape: Sequence[int]) -> Iterator[HostBatch]:
    return fixed_batches((x for x, _labels in batches), batch_size=batch_size, sample_shape=sample_shape)


def manifest_for(
    batches: Batches, *, input_name: str, batch_size: int, sample_shape: Sequence[int]
) -> CalibrationManifest:
    """Read the calibration set once and describe it; also checks that the source delivers ``batches.count`` samples."""
    digests: list[str] = []
    samples = 0
    for batch in _host_batches(batches, batch_size=batch_size, sample_shape=sample_shape):
        digests.append(hashlib.sha256(batch.data.tobytes()).hexdigest())
        samples += batch.real
    if samples != batches.count:
        raise CalibrationDataError(f"the calibration source announced {batches.count} samples and delivered {samples}")
    if samples == 0:
        raise CalibrationDataError("the calibration set is empty: add calibration.dataset samples")
    return CalibrationManifest(
        input_name=input_name,
        batch_shape=(batch_size, *(int(d) for d in sample_shape)),
        dtype="float32",
        samples=samples,
        batches=len(digests),
        padded=len(digests) * batch_size - samples,
        batch_sha256=tuple(digests),
    )


@dataclass
class CalibrationSession:
    """State behind TensorRT's calibrator callbacks: batches into one device buffer, cache bytes in and out.

    ``cached`` set and ``batches`` None means a cache-only session (a table
    computed elsewhere, e.g. on the CPU): TensorRT must accept the cache; if it
    asks for data anyway, that is recorded as an error.
    """

    input_name: str
    batch_size: int
    sample_shape: tuple[int, ...]
    allocator: DeviceAllocator | None
    batches: Batches | None = None
    cached: bytes | None = None
    written: bytes | None = None
    error: Exception | None = None
    fed: list[int] = field(default_factory=list)
    """Real samples in each batch handed to TensorRT."""
    _iter: Iterator[HostBatch] | None = field(default=None, init=False, repr=False)
    _buffer: DeviceBuffer | None = field(default=None, init=False, repr=False)

    @property
    def expected_batches(self) -> int:
        return batch_count(self.batches.count, self.batch_size) if self.batches is not None else 0

    def get_batch(self, names: Sequence[str]) -> list[int] | None:
        """Device pointers for the next batch, or None at the end (or after an error, kept in ``error``)."""
        if self.error is not None:
            return None
        try:
            return self._next(list(names))
        except Exception as exc:  # never raise through TensorRT's C++ frames; the builder checks ``error``
            self.error = exc
            return None

    def _next(self, names: list[str]) -> list[int] | None:
        if names != [self.input_name]:
            raise CalibrationDataError(
                f"TensorRT asked for inputs {names}; the calibrator feeds the single input {self.input_name!r}"
            )
        if self.batches is None:
            raise CalibrationDataError(
                "TensorRT did not accept the supplied calibration cache and asked for calibration data: "
                "the cache's header must name this TensorRT version and calibrator"
            )
        if self.allocator is None:
            raise CalibrationDataError("no device allocator for calibration batches")
        if self._iter is None:
            self._iter = _host_batches(self.batches, batch_size=self.batch_size, sample_shape=self.sample_shape)
        batch = next(self._iter, None)
        if batch is None:
            return None
        if self._buffer is None:
            self._buffer = self.allocator.allocate(batch.data.nbytes)
        self.allocator.copy_to_device(self._buffer, batch.data)
        self.fed.append(batch.real)
        return [int(self._buffer.ptr)]

    def read_calibration_cache(self) -> bytes | None:
        return self.cached

    def write_calibration_cache(self, data: Any) -> None:
        self.written = bytes(memoryview(data))

    def reset(self) -> None:
        self._iter = None
        self.fed.clear()

    def close(self) -> None:
        if self._buffer is not None and self.allocator is not None:
            self.allocator.release(self._buffer)
        self._buffer = None


def calibrator_base(trt: Any, algorithm: str) -> Any:
    """The TensorRT calibrator class for ``algorithm`` (entropy -> IInt8EntropyCalibrator2, minmax -> IInt8MinMaxCalibrator)."""
    bases = {"entropy": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}
    if algorithm not in bases:
        raise InvalidInputError(f"calibration.algorithm {algorithm}: TensorRT's calibrators are entropy and minmax")
    return bases[algorithm]


def make_calibrator(trt: Any, *, algorithm: str, session: CalibrationSession) -> Any:
    """A TensorRT calibrator object (subclass of the algorithm's base class) that delegates to ``session``."""
    base = calibrator_base(trt, algorithm)

    class EdgequantCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # pybind trampolines must have the base initialised explicitly
            self.session = session

        def get_batch_size(self) -> int:
            # Explicit-batch networks take the batch from the calibration profile (kOPT), which equals this.
            return session.batch_size

        def get_batch(self, names: Sequence[str]) -> list[int] | None:
            return session.get_batch(names)

        def read_calibration_cache(self) -> bytes | None:
            return session.read_calibration_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            session.write_calibration_cache(cache)

    return EdgequantCalibrator()


class PycudaAllocator:
    """Device buffers through pycuda on the device's primary context (shared with TensorRT's CUDA runtime)."""

    def __init__(self) -> None:
        import pycuda.autoprimaryctx  # noqa: F401  (retains and pushes the primary context, pops it at exit)
        import pycuda.driver as cuda

        self._cuda = cuda

    def allocate(self, nbytes: int) -> DeviceBuffer:
        return _PycudaBuffer(self._cuda.mem_alloc(nbytes))

    def copy_to_device(self, buffer: DeviceBuffer, host: np.ndarray) -> None:
        assert isinstance(buffer, _PycudaBuffer)
        self._cuda.memcpy_htod(buffer.allocation, np.ascontiguousarray(host))

    def release(self, buffer: DeviceBuffer) -> None:
        assert isinstance(buffer, _PycudaBuffer)
        buffer.allocation.free()


@dataclass
class _PycudaBuffer:
    allocation: Any
    """pycuda.driver.DeviceAllocation"""

    @property
    def ptr(self) -> int:
        return int(self.allocation)
