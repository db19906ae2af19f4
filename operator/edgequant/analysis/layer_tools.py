"""The per-layer tool protocol, and the tool of a method (named in the method catalogue, ``api/methods.py``).

Like the backend registry, the catalogue names each tool's factory as a lazily
imported "module:factory": it takes the run's ``QuantizeRequest`` and returns a
``LayerTool``; its framework is imported only then.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from edgequant.analysis.sensitivity import LayerProbe
from edgequant.backends.base import QuantizeRequest
from edgequant.util.memory import DEFAULT_BUDGET_BYTES


class LayerTool(Protocol):
    """Per-layer control over one model's quantization, in the source model's layer names."""

    @property
    def layers(self) -> list[str]:
        """Quantizable layers in graph order."""
        ...

    def model_with_only(self, layer: str) -> Path:
        """A model with only ``layer`` quantized (float I/O), for the exhaustive ranking."""
        ...

    def model_keeping_float(self, layers: Iterable[str]) -> Path:
        """The method's artifact with ``layers`` kept in float (mixed precision)."""
        ...

    def probe(
        self, inputs: Iterable[np.ndarray], *, max_samples: int = 256, memory_budget: int = DEFAULT_BUDGET_BYTES
    ) -> list[LayerProbe]:
        """One quantized model against the float one on ``inputs``: each layer's own noise and output error.

        Streams: batches sized to ``memory_budget`` (``util.memory``), each one's tensors dropped once accumulated.
        """
        ...


def layer_tool_for(request: QuantizeRequest, backend: object) -> LayerTool:
    """The method's layer tool (its own or a proxy's, from the method catalogue); ``KeyError`` when it has none.

    The catalogue names it "module:factory"; factory(request, backend) -> LayerTool (backend: the run's Backend).
    """
    entry = request.method.row.layer_tool
    if entry is None:
        raise KeyError(request.method.value)
    module_name, _, factory_name = entry.partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    tool: LayerTool = factory(request, backend)
    return tool


def rebatch(inputs: Iterable[np.ndarray], size: int, limit: int) -> Iterable[np.ndarray]:
    """Float32 batches of ``size`` samples from any batches, at most ``limit`` samples in all."""
    buffer: list[np.ndarray] = []
    taken = 0
    for batch in inputs:
        for sample in batch:
            if taken >= limit:
                break
            buffer.append(sample)
            taken += 1
            if len(buffer) == size:
                yield np.stack(buffer).astype(np.float32)
                buffer = []
        if taken >= limit:
            break
    if buffer:
        yield np.stack(buffer).astype(np.float32)
