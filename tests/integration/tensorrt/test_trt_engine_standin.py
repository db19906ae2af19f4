"""build_engine's failure paths against the TensorRT stand-in: parser errors, refused builds, calibrator errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.tensorrt.calibrator import CalibrationDataError, CalibrationSession, PycudaAllocator
from edgequant.backends.tensorrt.engine import EngineBuildError, build_engine
from edgequant.backends.tensorrt.model_info import read_model_info
from edgequant.backends.tensorrt.plan import plan_build, plan_fp32
from edgequant.backends.tensorrt.version import ApiGeneration
from edgequant.util.errors import InvalidInputError
from tests.integration.tensorrt.standin import install

pytestmark = pytest.mark.integration

CAL = api.Calibration(dataset=api.Dataset(uri="file:///d/"), algorithm=api.CalibrationAlgorithm.MINMAX)


def _build(trt, model: Path, plan, session=None, log=None):
    return build_engine(
        trt,
        onnx_path=model,
        plan=plan,
        nodes=read_model_info(model).nodes,
        batch_size=8,
        workspace_bytes=1 << 28,
        session=session,
        version=trt.__version__,
        log=log or (lambda _m: None),
    )


def test_parser_errors_name_the_node_and_the_fix(monkeypatch, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["input"], ["probs"], name="/softmax/Softmax")],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 10, 1, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10, 1, 1])],
    )
    model = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    trt, _ = install(monkeypatch, version="8.6.1")
    with pytest.raises(
        InvalidInputError,
        match=r"softmax.onnx: TensorRT 8.6.1's ONNX parser rejected the model: node 0: no importer for Softmax",
    ):
        _build(trt, model, plan_fp32(ApiGeneration.TRT8))


def test_an_implicit_batch_network_is_what_tensorrt8_would_refuse(monkeypatch, fashion_cnn_onnx: Path) -> None:
    trt, _ = install(monkeypatch, version="8.6.1")
    without_flag = replace(plan_fp32(ApiGeneration.TRT8), network_flags=())
    with pytest.raises(InvalidInputError, match="explicit batch"):
        _build(trt, fashion_cnn_onnx, without_flag)


def test_a_refused_build_reports_tensorrts_own_messages(monkeypatch, fashion_cnn_onnx: Path) -> None:
    trt, _ = install(monkeypatch, version="10.3.0")
    seen: list[str] = []
    broken = replace(plan_fp32(ApiGeneration.TRT10), network_flags=("STRONGLY_TYPED",), builder_flags=("FP16",))
    with pytest.raises(EngineBuildError, match="precision flags are not allowed with a strongly typed network"):
        _build(trt, fashion_cnn_onnx, broken, log=seen.append)
    assert seen == ["TensorRT ERROR: precision flags are not allowed with a strongly typed network"]


def test_calibrator_errors_surface_after_the_build(monkeypatch, fashion_cnn_onnx: Path, fashion_batches) -> None:
    trt, _memory = install(monkeypatch, version="8.6.1")
    plan = plan_build(
        method=api.Method.TENSORRT_INT8,
        generation=ApiGeneration.TRT8,
        options=api.TensorRTOptions(),
        calibration=CAL,
        keep_float=(),
        fallback=api.FallbackPrecision.FP16,
    )
    session = CalibrationSession(
        input_name="images",
        batch_size=8,
        sample_shape=(1, 28, 28),
        allocator=PycudaAllocator(),
        batches=fashion_batches(20),
    )
    with pytest.raises(
        CalibrationDataError,
        match=r"TensorRT asked for inputs \['input'\]; the calibrator feeds the single input 'images'",
    ):
        _build(trt, fashion_cnn_onnx, plan, session=session)


def test_pins_in_a_strongly_typed_network_are_what_tensorrt10_forbids(monkeypatch, fashion_cnn_onnx: Path) -> None:
    trt, _ = install(monkeypatch, version="10.3.0")
    forbidden = replace(
        plan_fp32(ApiGeneration.TRT10), network_flags=("STRONGLY_TYPED",), pinned=("/fc2/Gemm",), pin_precision="HALF"
    )
    with pytest.raises(RuntimeError, match="not allowed in a strongly typed network"):
        _build(trt, fashion_cnn_onnx, forbidden)
    # ... which is why plan_build never makes such a plan (mixed explicit builds stay weakly typed).
    mixed = plan_build(
        method=api.Method.TENSORRT_MIXED,
        generation=ApiGeneration.TRT10,
        options=api.TensorRTOptions(),
        calibration=CAL,
        keep_float=("/fc2/Gemm",),
        fallback=api.FallbackPrecision.FP16,
    )
    assert not mixed.strongly_typed
