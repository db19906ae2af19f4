"""onnx-dynamic: int8 weights shrink a weight-dominated model at least 3x and keep its outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend
from edgequant.util.cpu import CpuFeatures
from tests.integration.onnx.conftest import CnnFiles, initializers

pytestmark = pytest.mark.integration


def _outputs(backend: OnnxRuntimeBackend, path: Path, options: Any, x: np.ndarray) -> np.ndarray:
    return backend.load(path, options=options).predict(x)


def test_dynamic_quantization_shrinks_a_1m_parameter_model_3x(
    dense_onnx: tuple[Path, int],
    quantize_request: Callable[..., Any],
    prepared: Callable[..., Any],
    forced_cpu: CpuFeatures,
) -> None:
    path, params = dense_onnx
    assert params >= 1_000_000
    backend = OnnxRuntimeBackend(cpu=forced_cpu)
    request = quantize_request("onnx-dynamic", model=path)
    artifact = backend.quantize(request)
    ratio = path.stat().st_size / artifact.path.stat().st_size
    assert ratio >= 3.0, ratio
    weights = [a for a in initializers(artifact.path).values() if a.ndim == 2]
    assert weights and all(a.dtype == np.int8 for a in weights)
    x = next(iter(prepared("evaluation", 1000).batches(batch_size=256)))[0]
    fp32, int8 = _outputs(backend, path, request.options, x), _outputs(backend, artifact.path, request.options, x)
    cosine = (fp32 * int8).sum(axis=1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1))
    assert float(cosine.min()) > 0.99
    assert artifact.path.name == "dense-heavy.dynamic-int8.onnx"
    assert not any("ConvInteger" in n for n in artifact.notes)


def test_dynamic_on_a_cnn_says_static_suits_it(
    fmnist_cnn: CnnFiles, quantize_request: Callable[..., Any], score: Callable[..., float], forced_cpu: CpuFeatures
) -> None:
    backend = OnnxRuntimeBackend(cpu=forced_cpu)
    request = quantize_request("onnx-dynamic", model=fmnist_cnn.onnx, onnx={"perChannel": False, "weightType": "uint8"})
    artifact = backend.quantize(request)
    assert any("ConvInteger" in n and "onnx-static suits CNNs" in n for n in artifact.notes)
    assert any("uint8 weights run on u8u8 kernels" in n for n in artifact.notes)
    assert {a.dtype for a in initializers(artifact.path).values() if a.ndim == 4} == {np.dtype(np.uint8)}
    assert score(backend, artifact.path, request.options) > 0.8
