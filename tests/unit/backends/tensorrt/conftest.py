"""Shared pieces for the TensorRT backend's CPU tests.

``HostAllocator`` stands in for device memory (pycuda cannot exist without a
GPU): it hands out host buffers with distinct fake addresses and records every
copy, so tests see exactly what TensorRT would read. ``fashion_batches`` is a
calibration set through the shared data pipeline (``PreparedSet.batches``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches

NCHW_GRAY = api.InputContract(shape=[1, 28, 28], layout=api.Layout.NCHW, color_order=api.ColorOrder.GRAY)


@dataclass
class HostBuffer:
    ptr: int
    data: np.ndarray


@dataclass
class HostAllocator:
    next_ptr: int = 0x7F00_0000_0000
    buffers: list[HostBuffer] = field(default_factory=list)
    copies: list[np.ndarray] = field(default_factory=list)
    released: list[int] = field(default_factory=list)

    def allocate(self, nbytes: int) -> HostBuffer:
        buffer = HostBuffer(ptr=self.next_ptr, data=np.zeros(nbytes, dtype=np.uint8))
        self.next_ptr += max(nbytes, 256)
        self.buffers.append(buffer)
        return buffer

    def copy_to_device(self, buffer: HostBuffer, host: np.ndarray) -> None:
        raw = np.ascontiguousarray(host).view(np.uint8).reshape(-1)
        assert raw.size == buffer.data.size, "copy size differs from the allocation"
        buffer.data[:] = raw
        self.copies.append(np.array(host, copy=True))

    def release(self, buffer: HostBuffer) -> None:
        self.released.append(buffer.ptr)


@pytest.fixture
def host_allocator() -> HostAllocator:
    return HostAllocator()


@pytest.fixture
def fashion_batches(fashion_mnist: Any) -> Callable[..., Batches]:
    """``make(n, batch_size=64)``: the first n Fashion-MNIST test images as the data pipeline batches them (NCHW, [0, 1])."""
    from edgequant.data.loader import PreparedSet

    def make(n: int, *, batch_size: int = 64, start: int = 0) -> Batches:
        pixels = fashion_mnist.test_x[start : start + n][..., None]
        labels = fashion_mnist.test_y[start : start + n].astype(np.int64)
        prepared = PreparedSet(
            name="calibration",
            uri="file:///fashion/",
            contract=NCHW_GRAY,
            pixels=pixels,
            labels=labels,
            sources=[f"{i}.png" for i in range(n)],
            classes=dict(enumerate(fashion_mnist.classes)),
        )
        return prepared.batches(batch_size=batch_size)

    return make
