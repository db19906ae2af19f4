"""ONNX Runtime backend: onnx-dynamic and onnx-static (Q/DQ; MinMax, Entropy, Percentile calibration) on ONNX models.

onnxruntime is imported by these modules at their top, so import them only
when the backend is chosen (the registry does). See docs/onnx.md.

The names below are the backend's public surface: the other backends that
check, calibrate or score ONNX models with ONNX Runtime (pytorch, tensorrt)
import them from this package (``from edgequant.backends.onnxruntime import
OrtPredictor``), never from its modules; each is imported from its module on
first use, so importing the package imports no onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgequant.backends.onnxruntime.calibration import ORT_METHOD, calibrate
    from edgequant.backends.onnxruntime.model import check_input, check_input_shape, read_model
    from edgequant.backends.onnxruntime.options import StaticSettings, choose_reduce_range
    from edgequant.backends.onnxruntime.predictor import OrtPredictor
    from edgequant.backends.onnxruntime.quantize import FLOAT16_NOTE, convert_to_float16

#: public name -> the module of this package that defines it.
_PUBLIC = {
    "ORT_METHOD": "calibration",
    "calibrate": "calibration",
    "check_input": "model",
    "check_input_shape": "model",
    "read_model": "model",
    "StaticSettings": "options",
    "choose_reduce_range": "options",
    "OrtPredictor": "predictor",
    "FLOAT16_NOTE": "quantize",
    "convert_to_float16": "quantize",
}
__all__ = [
    "FLOAT16_NOTE",
    "ORT_METHOD",
    "OrtPredictor",
    "StaticSettings",
    "calibrate",
    "check_input",
    "check_input_shape",
    "choose_reduce_range",
    "convert_to_float16",
    "read_model",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
