"""TensorRTBackend end to end on the CPU: real ONNX Runtime, storage and data; stand-ins for tensorrt and pycuda.

What this proves: the backend drives each method through the documented API
of the installed generation (8.6 or 10.x) with the right flags, strong typing,
pins, calibrator and cache flow, and its predictor batches correctly. What it
cannot: that TensorRT itself builds these engines (no TensorRT here; see
docs/tensorrt.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import backend_options
from edgequant.backends.base import QuantizeRequest
from edgequant.backends.tensorrt.backend import TensorRTBackend
from edgequant.backends.tensorrt.cache_format import parse
from edgequant.backends.tensorrt.version import UnsupportedTensorRTError
from edgequant.storage import Stores, file_uri
from edgequant.util.errors import InvalidInputError
from tests.integration.tensorrt.standin import engine_plan, install

pytestmark = pytest.mark.integration


def _spec(tmp_path: Path, method: str, **extra: Any) -> api.QuantizationJobSpec:
    doc: dict[str, Any] = {
        "model": {
            "uri": "file:///models/fashion.onnx",
            "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"},
        },
        "method": method,
        "output": {"uri": file_uri(tmp_path / "out", folder=True)},
    }
    if method != "tensorrt-fp16":
        doc["calibration"] = {"dataset": {"uri": "file:///data/cal/"}, "algorithm": "entropy"}
    doc.update(extra)
    return api.QuantizationJobSpec.model_validate(doc)


def _request(
    spec: api.QuantizationJobSpec, model: Path, workdir: Path, batches: Any = None, keep: tuple[str, ...] = ()
) -> QuantizeRequest:
    return QuantizeRequest(
        options=backend_options(spec),
        model_path=model,
        workdir=workdir,
        calibration=batches,
        keep_float=list(keep),
        log=lambda _m: None,
    )


def _backend() -> TensorRTBackend:
    return TensorRTBackend(
        stores=Stores(storage=api.Storage()), gpu_check=lambda **_: 1
    )  # no GPU here: the check is the one thing assumed


def _test_images(fashion_mnist: Any, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    return (fashion_mnist.test_x[:n, None] / np.float32(255)).astype(np.float32), fashion_mnist.test_y[:n]


def _ort_logits(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_int8_on_tensorrt8_calibrates_on_the_gpu_path_then_an_identical_job_reads_the_cache(
    monkeypatch, fashion_cnn_onnx: Path, fashion_batches, fashion_mnist, tmp_path: Path
) -> None:
    trt, memory = install(monkeypatch, version="8.6.1")
    spec = _spec(tmp_path, "tensorrt-int8")
    artifact = _backend().quantize(_request(spec, fashion_cnn_onnx, tmp_path / "w1", fashion_batches(200)))
    build = trt.builds[-1]
    assert build["flags"] == ["INT8"] and not build["strongly_typed"]
    assert (build["calibration"], build["batches"]) == ("batches", 7)  # ceil(200 / 32), the last padded
    assert build["profile"] == ((1, 1, 28, 28), (32, 1, 28, 28), (32, 1, 28, 28))
    assert artifact.path.name == f"{fashion_cnn_onnx.stem}.int8.engine"
    assert artifact.notes[0] == "TensorRT 8.6.1 (tensorrt-8 API path)"
    stored = sorted((tmp_path / "out" / "calibration-cache").glob("*.cache"))
    assert len(stored) == 1 and stored[0].name.startswith("trt8.6.1-gpu-entropy-")
    assert parse(stored[0].read_bytes()).header == "TRT-8601-EntropyCalibration2"
    assert [p.read_bytes() for p in artifact.extra_files] == [stored[0].read_bytes()]
    assert memory.freed, "the calibration device buffer was not released"

    x, _y = _test_images(fashion_mnist, 100)
    predictor = _backend().load(artifact.path, options=backend_options(spec))
    np.testing.assert_allclose(predictor.predict(x), _ort_logits(fashion_cnn_onnx, x), rtol=1e-5, atol=1e-5)

    again = _backend().quantize(_request(spec, fashion_cnn_onnx, tmp_path / "w2", fashion_batches(200)))
    assert trt.builds[-1]["calibration"] == "cache" and trt.builds[-1]["batches"] == 0
    assert any(n.startswith("calibration skipped: identical cache found at file://") for n in again.notes)


def test_int8_on_tensorrt10_builds_the_qdq_model_strongly_typed(
    monkeypatch, fashion_cnn_onnx: Path, fashion_batches, fashion_mnist, tmp_path: Path
) -> None:
    trt, _ = install(monkeypatch, version="10.3.0")
    spec = _spec(tmp_path, "tensorrt-int8")
    artifact = _backend().quantize(_request(spec, fashion_cnn_onnx, tmp_path / "w", fashion_batches(256)))
    build = trt.builds[-1]
    assert (build["flags"], build["strongly_typed"], build["pinned"]) == ([], True, {})
    assert "calibration" not in trt.builds[-1]
    assert engine_plan(artifact.path)["onnx"].endswith(".qdq.onnx")
    assert not list((tmp_path / "out").glob("calibration-cache/*"))
    x, y = _test_images(fashion_mnist, 500)
    fp32 = (_ort_logits(fashion_cnn_onnx, x).argmax(1) == y).mean()
    int8 = (_backend().load(artifact.path, options=backend_options(spec)).predict(x).argmax(1) == y).mean()
    assert abs(fp32 - int8) < 0.02


def test_mixed_on_tensorrt8_pins_the_layers_of_the_named_nodes_and_obeys(
    monkeypatch, fashion_cnn_onnx: Path, fashion_batches, tmp_path: Path
) -> None:
    trt, _ = install(monkeypatch, version="8.6.1")
    spec = _spec(
        tmp_path, "tensorrt-mixed", mixedPrecision={"mode": "manual", "pinnedLayers": ["/fc2/Gemm", "/conv1/Conv"]}
    )
    artifact = _backend().quantize(
        _request(spec, fashion_cnn_onnx, tmp_path / "w", fashion_batches(64), keep=("/fc2/Gemm", "/conv1/Conv"))
    )
    build = trt.builds[-1]
    assert build["flags"] == sorted(["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"])
    pinned = build["pinned"]
    assert set(pinned) == {"/conv1/Conv", "/fc2/Gemm"} | {n for n in pinned if n.startswith("/fc2/Gemm_")}
    assert len(pinned) == 3 and all(p == {"precision": "HALF", "outputs": {"0": "HALF"}} for p in pinned.values())
    assert artifact.path.name.endswith(".mixed-pinned.engine")
    assert any(n.startswith("pinned 3 TensorRT layer(s) to HALF") for n in artifact.notes)
    assert any(n.startswith("ONNX node /fc2/Gemm -> TensorRT layer(s) /fc2/Gemm, /fc2/Gemm_") for n in artifact.notes)


def test_mixed_on_tensorrt10_keeps_the_qdq_network_weakly_typed_for_the_pins(
    monkeypatch, fashion_cnn_onnx: Path, fashion_batches, tmp_path: Path
) -> None:
    trt, _ = install(monkeypatch, version="10.3.0")
    spec = _spec(tmp_path, "tensorrt-mixed", tensorrt={"precisionConstraints": "prefer"})
    _backend().quantize(_request(spec, fashion_cnn_onnx, tmp_path / "w", fashion_batches(64), keep=("/fc2/Gemm",)))
    build = trt.builds[-1]
    assert not build["strongly_typed"] and build["flags"] == sorted(["INT8", "FP16", "PREFER_PRECISION_CONSTRAINTS"])
    assert "/fc2/Gemm" in build["pinned"]


def test_cpu_calibration_hands_tensorrt_a_table_it_accepts(
    monkeypatch, fashion_cnn_onnx: Path, fashion_batches, tmp_path: Path
) -> None:
    trt, _ = install(monkeypatch, version="8.6.1")
    spec = _spec(
        tmp_path,
        "tensorrt-int8",
        tensorrt={"calibrationDevice": "cpu"},
        calibration={"dataset": {"uri": "file:///d/"}, "algorithm": "percentile", "percentile": 99.99},
    )
    artifact = _backend().quantize(_request(spec, fashion_cnn_onnx, tmp_path / "w", fashion_batches(128)))
    assert trt.builds[-1]["calibration"] == "cache"  # TensorRT took the CPU table and asked for no batches
    stored = sorted((tmp_path / "out" / "calibration-cache").glob("*.cache"))
    assert len(stored) == 1 and stored[0].name.startswith("trt8.6.1-cpu-percentile-99.99-")
    assert parse(stored[0].read_bytes()).header == "TRT-8601-MinMaxCalibration"
    assert any("computed on the CPU by ONNX Runtime (percentile)" in n for n in artifact.notes)


def test_a_cache_for_another_tensorrt_is_not_trusted(
    monkeypatch, fashion_cnn_onnx: Path, fashion_batches, tmp_path: Path
) -> None:
    install(monkeypatch, version="8.6.1")
    spec = _spec(tmp_path, "tensorrt-int8")
    _backend().quantize(_request(spec, fashion_cnn_onnx, tmp_path / "w1", fashion_batches(64)))
    trt10, _ = install(monkeypatch, version="10.3.0")
    spec10 = _spec(tmp_path, "tensorrt-int8", tensorrt={"int8Mode": "implicit"})
    artifact = _backend().quantize(_request(spec10, fashion_cnn_onnx, tmp_path / "w2", fashion_batches(64)))
    assert trt10.builds[-1]["calibration"] == "batches"  # a new key: calibrated again, not the 8.6 cache
    assert any("deprecated since TensorRT 10.1" in n for n in artifact.notes)
    assert len(list((tmp_path / "out" / "calibration-cache").glob("*.cache"))) == 2


def test_fp16_and_the_fp32_baseline(monkeypatch, fashion_cnn_onnx: Path, fashion_mnist, tmp_path: Path) -> None:
    trt, _ = install(monkeypatch, version="10.3.0")
    spec = _spec(tmp_path, "tensorrt-fp16", tensorrt={"batchSize": 16})
    backend = _backend()
    artifact = backend.quantize(_request(spec, fashion_cnn_onnx, tmp_path / "w"))
    assert trt.builds[-1]["flags"] == ["FP16"] and trt.builds[-1]["profile"][2] == (16, 1, 28, 28)
    baseline = backend.export_baseline(_request(spec, fashion_cnn_onnx, tmp_path / "w"))
    assert trt.builds[-1]["flags"] == [] and baseline.format == "tensorrt-fp32"
    x, _ = _test_images(fashion_mnist, 50)  # 50 > the engine's 16: the predictor splits 16+16+16+2
    predictor = backend.load(artifact.path, options=backend_options(spec))
    assert predictor.max_batch == 16 and predictor.input.shape == (-1, 1, 28, 28)
    np.testing.assert_allclose(predictor.predict(x), _ort_logits(fashion_cnn_onnx, x), rtol=1e-5, atol=1e-5)
    assert predictor.gpu_latency_ms(x[:1]) > 0
    onnx_predictor = backend.load(fashion_cnn_onnx, options=backend_options(spec))
    np.testing.assert_allclose(onnx_predictor.predict(x), _ort_logits(fashion_cnn_onnx, x))


def test_impossible_or_unsupported_builds_are_clear_errors(
    monkeypatch, fashion_cnn_onnx: Path, fashion_batches, tmp_path: Path
) -> None:
    install(monkeypatch, version="8.6.1")
    with pytest.raises(InvalidInputError, match="int8Mode: explicit .* needs TensorRT 10"):
        _backend().quantize(
            _request(
                _spec(tmp_path, "tensorrt-int8", tensorrt={"int8Mode": "explicit"}),
                fashion_cnn_onnx,
                tmp_path / "w",
                fashion_batches(32),
            )
        )
    with pytest.raises(InvalidInputError, match=r"'/fc/Gemm' \(did you mean '/fc\d/Gemm', '/fc\d/Gemm', "):
        _backend().quantize(
            _request(
                _spec(tmp_path, "tensorrt-mixed"),
                fashion_cnn_onnx,
                tmp_path / "w",
                fashion_batches(32),
                keep=("/fc/Gemm",),
            )
        )
    install(monkeypatch, version="11.0.0")
    with pytest.raises(UnsupportedTensorRTError, match="TensorRT 11.0.0 is not supported"):
        _backend().quantize(_request(_spec(tmp_path, "tensorrt-fp16"), fashion_cnn_onnx, tmp_path / "w"))


def test_without_the_bindings_the_message_names_the_image(fashion_cnn_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="need the TensorRT Python bindings.*quantizer-tensorrt"):
        _backend().quantize(_request(_spec(tmp_path, "tensorrt-fp16"), fashion_cnn_onnx, tmp_path / "w"))


def test_quantizable_layers_are_the_onnx_nodes_with_weights(fashion_cnn_onnx: Path, tmp_path: Path) -> None:
    request = _request(_spec(tmp_path, "tensorrt-mixed"), fashion_cnn_onnx, tmp_path / "w")
    assert _backend().quantizable_layers(request) == ["/conv1/Conv", "/conv2/Conv", "/fc1/Gemm", "/fc2/Gemm"]
