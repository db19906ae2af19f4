"""Which methods can quantize layers one at a time, and the backend-specific tool that does it.

One explicit table of lazily imported factories, like the backend registry:
a factory takes the run's ``QuantizeRequest`` and returns a ``LayerTool``;
its framework is imported only then.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from edgequant.analysis.sensitivity import LayerProbe
from edgequant.api import v1alpha1 as api
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

    def probe(self, inputs: Iterable[np.ndarray], *, max_samples: int = 256, memory_budget: int = DEFAULT_BUDGET_BYTES) -> list[LayerProbe]:
        """One quantized model against the float one on ``inputs``: each layer's own noise and output error.

        Streams: batches sized to ``memory_budget`` (``util.memory``), each one's tensors dropped once accumulated.
        """
        ...


#: method -> "module:factory"; factory(request: QuantizeRequest, backend) -> LayerTool (backend: the run's Backend).
LAYER_TOOLS: dict[api.Method, str] = {
    api.Method.TFLITE_INT8: "edgequant.analysis.tflite_sensitivity:for_request",
    api.Method.ONNX_STATIC: "edgequant.analysis.ort_sensitivity:for_request",
}

#: The float16 rung of the degrade ladder per method (None: already float16). The method itself means the
#: backend converts the model to float16 (``Float16Export``), for families without a float16 method.
FLOAT16_FALLBACK: dict[api.Method, api.Method | None] = {
    api.Method.TFLITE_DYNAMIC_RANGE: api.Method.TFLITE_FLOAT16,
    api.Method.TFLITE_FLOAT16: None,
    api.Method.TFLITE_INT8: api.Method.TFLITE_FLOAT16,
    api.Method.TFLITE_QAT: api.Method.TFLITE_FLOAT16,
    api.Method.TORCH_QAT: api.Method.TORCH_QAT,
    api.Method.ONNX_DYNAMIC: api.Method.ONNX_DYNAMIC,
    api.Method.ONNX_STATIC: api.Method.ONNX_STATIC,
    api.Method.TENSORRT_FP16: None,
    api.Method.TENSORRT_INT8: api.Method.TENSORRT_FP16,
    api.Method.TENSORRT_MIXED: api.Method.TENSORRT_FP16,
}


#: Methods whose layers are ranked by another method's tool (a CPU proxy); their own backend builds pinned artifacts.
PROXY_LAYER_TOOLS: dict[api.Method, str] = {
    api.Method.TENSORRT_INT8: "edgequant.analysis.ort_sensitivity:proxy_for_request",
    api.Method.TENSORRT_MIXED: "edgequant.analysis.ort_sensitivity:proxy_for_request",
}


def supports_layers(method: api.Method) -> bool:
    """The method's own tool builds its artifact with layers kept in float."""
    return method in LAYER_TOOLS


def ranks_layers(method: api.Method) -> bool:
    """Per-layer sensitivity can rank this method's layers (with its own tool or a proxy)."""
    return method in LAYER_TOOLS or method in PROXY_LAYER_TOOLS


def layer_tool_for(request: QuantizeRequest, backend: object) -> LayerTool:
    """The method's layer tool (or its proxy); ``KeyError`` when the method has neither."""
    module_name, _, factory_name = {**PROXY_LAYER_TOOLS, **LAYER_TOOLS}[request.method].partition(":")
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
