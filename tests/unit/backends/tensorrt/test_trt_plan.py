"""The build decisions per method x TensorRT generation x options: flags, strong typing, calibration, pins."""

from __future__ import annotations

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.tensorrt.plan import Source, plan_build, plan_fp32
from edgequant.backends.tensorrt.version import ApiGeneration
from edgequant.util.errors import InvalidInputError

M = api.Method
G = ApiGeneration
CAL = api.Calibration(dataset=api.Dataset(uri="file:///data/cal/"), algorithm=api.CalibrationAlgorithm.ENTROPY)


def plan(
    method: api.Method,
    generation: ApiGeneration,
    *,
    keep: tuple[str, ...] = (),
    calibration: api.Calibration | None = CAL,
    fallback: api.FallbackPrecision = api.FallbackPrecision.FP16,
    **options: object,
):
    return plan_build(
        method=method,
        generation=generation,
        options=api.TensorRTOptions(**options),
        calibration=calibration,
        keep_float=keep,
        fallback=fallback,
    )


def test_fp16_on_tensorrt8_requests_explicit_batch_and_the_fp16_flag() -> None:
    p = plan(M.TENSORRT_FP16, G.TRT8, calibration=None)
    assert p.network_flags == ("EXPLICIT_BATCH",)
    assert p.builder_flags == ("FP16",)
    assert p.calibration is None and p.source is Source.ONNX and p.int8_mode is None


def test_fp16_on_tensorrt10_needs_no_network_flag() -> None:
    p = plan(M.TENSORRT_FP16, G.TRT10, calibration=None)
    assert p.network_flags == () and p.builder_flags == ("FP16",)


def test_fp16_pins_to_fp16_are_dropped_with_a_note_and_fp32_pins_are_obeyed() -> None:
    same = plan(M.TENSORRT_FP16, G.TRT8, keep=("/fc/Gemm",), calibration=None)
    assert same.pinned == () and same.pin_precision is None and "ignored" in same.notes[0]
    fp32 = plan(M.TENSORRT_FP16, G.TRT8, keep=("/fc/Gemm",), calibration=None, fallback=api.FallbackPrecision.FP32)
    assert fp32.pinned == ("/fc/Gemm",) and fp32.pin_precision == "FLOAT"
    assert fp32.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")


def test_int8_auto_on_tensorrt8_calibrates_implicitly() -> None:
    p = plan(M.TENSORRT_INT8, G.TRT8)
    assert p.int8_mode is api.TensorRTInt8Mode.IMPLICIT
    assert p.builder_flags == ("INT8",) and p.network_flags == ("EXPLICIT_BATCH",)
    assert p.calibration is not None and p.calibration.calibrator == "entropy"
    assert p.calibration.header_algorithm == "EntropyCalibration2" and p.calibration.recipe == "gpu-entropy"


def test_int8_auto_on_tensorrt10_is_explicit_qdq_strongly_typed_without_precision_flags() -> None:
    p = plan(M.TENSORRT_INT8, G.TRT10)
    assert p.int8_mode is api.TensorRTInt8Mode.EXPLICIT and p.source is Source.QDQ_ONNX
    assert p.network_flags == ("STRONGLY_TYPED",) and p.strongly_typed
    assert p.builder_flags == () and p.calibration is None
    assert p.qdq_calibration is api.CalibrationAlgorithm.ENTROPY


def test_implicit_on_tensorrt10_still_works_and_says_it_is_deprecated() -> None:
    p = plan(M.TENSORRT_INT8, G.TRT10, int8_mode="implicit")
    assert p.builder_flags == ("INT8",) and p.network_flags == () and p.calibration is not None
    assert any("deprecated since TensorRT 10.1" in n for n in p.notes)


def test_explicit_on_tensorrt8_is_refused_with_the_field() -> None:
    with pytest.raises(InvalidInputError, match="spec.tensorrt.int8Mode"):
        plan(M.TENSORRT_INT8, G.TRT8, int8_mode="explicit")


def test_minmax_picks_the_minmax_calibrator() -> None:
    cal = api.Calibration(dataset=api.Dataset(uri="file:///d/"), algorithm=api.CalibrationAlgorithm.MINMAX)
    p = plan(M.TENSORRT_INT8, G.TRT8, calibration=cal)
    assert p.calibration is not None and p.calibration.calibrator == "minmax"
    assert p.calibration.header_algorithm == "MinMaxCalibration" and p.calibration.recipe == "gpu-minmax"


def test_percentile_needs_cpu_calibration_and_then_keys_its_percentile() -> None:
    cal = api.Calibration(
        dataset=api.Dataset(uri="file:///d/"), algorithm=api.CalibrationAlgorithm.PERCENTILE, percentile=99.99
    )
    with pytest.raises(InvalidInputError, match="calibrationDevice to cpu"):
        plan(M.TENSORRT_INT8, G.TRT8, calibration=cal)
    p = plan(M.TENSORRT_INT8, G.TRT8, calibration=cal, calibration_device="cpu")
    assert p.calibration is not None and p.calibration.recipe == "cpu-percentile-99.99"
    assert p.calibration.calibrator == "minmax"


def test_mixed_on_tensorrt8_pins_to_fp16_and_obeys() -> None:
    p = plan(M.TENSORRT_MIXED, G.TRT8, keep=("/conv1/Conv", "/fc/Gemm", "/conv1/Conv"))
    assert p.builder_flags == ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS")
    assert p.pinned == ("/conv1/Conv", "/fc/Gemm") and p.pin_precision == "HALF"


def test_prefer_constraints_use_the_prefer_flag() -> None:
    p = plan(M.TENSORRT_MIXED, G.TRT8, keep=("/fc/Gemm",), precision_constraints="prefer")
    assert p.builder_flags[-1] == "PREFER_PRECISION_CONSTRAINTS"


def test_mixed_without_pins_lets_tensorrt_choose_int8_or_fp16_per_layer() -> None:
    p = plan(M.TENSORRT_MIXED, G.TRT8)
    assert p.builder_flags == ("INT8", "FP16") and p.pinned == () and p.pin_precision is None


def test_int8_with_pins_becomes_mixed() -> None:
    p = plan(M.TENSORRT_INT8, G.TRT8, keep=("/fc/Gemm",))
    assert p.builder_flags == ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS")


def test_mixed_explicit_on_tensorrt10_stays_weakly_typed_so_pins_are_allowed() -> None:
    p = plan(M.TENSORRT_MIXED, G.TRT10, keep=("/fc/Gemm",))
    assert p.source is Source.QDQ_ONNX and not p.strongly_typed and p.network_flags == ()
    assert p.builder_flags == ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS") and p.pinned == ("/fc/Gemm",)


def test_int8_without_calibration_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match="spec.calibration"):
        plan(M.TENSORRT_INT8, G.TRT8, calibration=None)


def test_other_families_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="onnx-static"):
        plan(M.ONNX_STATIC, G.TRT8)


@pytest.mark.parametrize(("generation", "flags"), [(G.TRT8, ("EXPLICIT_BATCH",)), (G.TRT10, ())])
def test_fp32_baseline_sets_no_precision_flags(generation: ApiGeneration, flags: tuple[str, ...]) -> None:
    p = plan_fp32(generation)
    assert p.builder_flags == () and p.network_flags == flags and p.method is None
