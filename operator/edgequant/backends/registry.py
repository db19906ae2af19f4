"""Method -> backend, as one explicit table of lazily imported module paths.

The worker asks for a method's backend; only then is its module (and its
framework) imported. A test imports every entry.
"""

from __future__ import annotations

import importlib

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Backend

#: backend name -> "module:factory". The factory takes no arguments and returns a Backend.
BACKENDS: dict[str, str] = {
    "tflite": "edgequant.backends.tflite.backend:TFLiteBackend",
    "onnxruntime": "edgequant.backends.onnxruntime.backend:OnnxRuntimeBackend",
    "pytorch": "edgequant.backends.pytorch.backend:TorchQATBackend",
    "tensorrt": "edgequant.backends.tensorrt.backend:TensorRTBackend",
}

#: method -> backend name.
BACKEND_FOR_METHOD: dict[api.Method, str] = {
    api.Method.TFLITE_DYNAMIC_RANGE: "tflite",
    api.Method.TFLITE_FLOAT16: "tflite",
    api.Method.TFLITE_INT8: "tflite",
    api.Method.TFLITE_QAT: "tflite",
    api.Method.TORCH_QAT: "pytorch",
    api.Method.ONNX_DYNAMIC: "onnxruntime",
    api.Method.ONNX_STATIC: "onnxruntime",
    api.Method.TENSORRT_FP16: "tensorrt",
    api.Method.TENSORRT_INT8: "tensorrt",
    api.Method.TENSORRT_MIXED: "tensorrt",
}


def load_backend(name: str) -> Backend:
    module_name, _, factory_name = BACKENDS[name].partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    backend = factory()
    if not isinstance(backend, Backend):
        raise TypeError(f"{BACKENDS[name]} does not implement the Backend protocol")
    return backend


def backend_for(method: api.Method) -> Backend:
    return load_backend(BACKEND_FOR_METHOD[method])
