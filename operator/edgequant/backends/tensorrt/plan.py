"""What to build for a method on a TensorRT generation: network flags, builder flags, calibration, pins. Pure.

The table in docs/tensorrt.md is this function written out:

- fp16: weakly typed network, BuilderFlag.FP16.
- int8 implicit (TensorRT 8 by default; 10 when asked): BuilderFlag.INT8 and a
  calibrator (IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator) or a cache.
- int8 explicit (TensorRT 10 by default): the Q/DQ ONNX from ONNX Runtime's
  static path, in a STRONGLY_TYPED network with no precision flags.
- mixed, or any INT8 build with pinned layers: INT8 + FP16 flags, the pinned
  layers' precision and output types set, and OBEY_PRECISION_CONSTRAINTS (or
  PREFER_) so TensorRT honours them; explicit mode stays weakly typed here,
  since strongly typed networks forbid layer precisions.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from edgequant.api import v1alpha1 as api
from edgequant.backends.tensorrt.cache_format import HEADER_ALGORITHMS
from edgequant.backends.tensorrt.version import ApiGeneration
from edgequant.util.errors import InvalidInputError


class Source(enum.StrEnum):
    ONNX = "onnx"
    """The FP32 model as given."""
    QDQ_ONNX = "qdq-onnx"
    """The model with QuantizeLinear/DequantizeLinear pairs from ONNX Runtime's static quantizer."""


@dataclass(frozen=True)
class CalibrationPlan:
    device: api.CalibrationDevice
    algorithm: api.CalibrationAlgorithm
    percentile: float | None = None

    @property
    def calibrator(self) -> str:
        """TensorRT calibrator the build hands over: entropy, or minmax (also for CPU percentile ranges)."""
        return "entropy" if self.algorithm is api.CalibrationAlgorithm.ENTROPY else "minmax"

    @property
    def header_algorithm(self) -> str:
        return HEADER_ALGORITHMS[self.calibrator]

    @property
    def recipe(self) -> str:
        """The cache key's recipe: device, algorithm and its parameter."""
        base = f"{self.device.value}-{self.algorithm.value}"
        return f"{base}-{self.percentile:g}" if self.algorithm is api.CalibrationAlgorithm.PERCENTILE else base


@dataclass(frozen=True)
class BuildPlan:
    generation: ApiGeneration
    method: api.Method | None
    """None for the FP32 baseline engine."""
    int8_mode: api.TensorRTInt8Mode | None
    """Resolved (never auto) for INT8 builds; None for FP16."""
    source: Source
    network_flags: tuple[str, ...]
    """trt.NetworkDefinitionCreationFlag member names."""
    builder_flags: tuple[str, ...]
    """trt.BuilderFlag member names, in the order they are set."""
    calibration: CalibrationPlan | None
    """Implicit calibration (calibrator or cache); None for FP16 and explicit builds."""
    qdq_calibration: api.CalibrationAlgorithm | None
    """The ONNX Runtime calibration method behind the Q/DQ model (explicit builds)."""
    pinned: tuple[str, ...]
    """Names (ONNX nodes or TensorRT layers) pinned to ``pin_precision``."""
    pin_precision: str | None
    """trt.DataType member name: HALF or FLOAT."""
    notes: tuple[str, ...]

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags


def _network_flags(generation: ApiGeneration, *, strongly_typed: bool) -> tuple[str, ...]:
    if generation is ApiGeneration.TRT8:
        return ("EXPLICIT_BATCH",)  # implicit batch is the 8.x default; 10.x ignores the flag (always explicit)
    return ("STRONGLY_TYPED",) if strongly_typed else ()


def plan_build(
    *,
    method: api.Method,
    generation: ApiGeneration,
    options: api.TensorRTOptions,
    calibration: api.Calibration | None,
    keep_float: Sequence[str],
    fallback: api.FallbackPrecision,
) -> BuildPlan:
    """Decide the build; impossible combinations are errors naming the field and the fix."""
    if method.family is not api.MethodFamily.TENSORRT:
        raise InvalidInputError(f"spec.method: the TensorRT backend does not run {method.value}")
    pinned = tuple(dict.fromkeys(keep_float))
    pin_precision = "HALF" if fallback is api.FallbackPrecision.FP16 else "FLOAT"
    constraint = (
        "OBEY_PRECISION_CONSTRAINTS"
        if options.precision_constraints is api.PrecisionConstraints.OBEY
        else "PREFER_PRECISION_CONSTRAINTS"
    )
    notes: list[str] = []

    if method is api.Method.TENSORRT_FP16:
        flags = ["FP16"]
        if pinned and pin_precision == "HALF":
            notes.append("mixedPrecision pins to fp16 change nothing in an FP16 engine; pins ignored")
            pinned = ()
        if pinned:
            flags.append(constraint)
        return BuildPlan(
            generation=generation,
            method=method,
            int8_mode=None,
            source=Source.ONNX,
            network_flags=_network_flags(generation, strongly_typed=False),
            builder_flags=tuple(flags),
            calibration=None,
            qdq_calibration=None,
            pinned=pinned,
            pin_precision=pin_precision if pinned else None,
            notes=tuple(notes),
        )

    if calibration is None:
        raise InvalidInputError(f"spec.calibration: {method.value} calibrates INT8 ranges: add calibration.dataset")
    mode = options.int8_mode
    if mode is api.TensorRTInt8Mode.AUTO:
        mode = api.TensorRTInt8Mode.EXPLICIT if generation is ApiGeneration.TRT10 else api.TensorRTInt8Mode.IMPLICIT
    mixed = method is api.Method.TENSORRT_MIXED or bool(pinned)

    if mode is api.TensorRTInt8Mode.EXPLICIT:
        if generation is not ApiGeneration.TRT10:
            raise InvalidInputError(
                "spec.tensorrt.int8Mode: explicit (strongly typed Q/DQ) needs TensorRT 10; this image has TensorRT 8: "
                "set int8Mode to auto or implicit"
            )
        if mixed:
            flags = ["INT8", "FP16"] + ([constraint] if pinned else [])
            notes.append("explicit Q/DQ build kept weakly typed so that pinned layers and FP16 fallback can be set")
        else:
            flags = []
        return BuildPlan(
            generation=generation,
            method=method,
            int8_mode=mode,
            source=Source.QDQ_ONNX,
            network_flags=_network_flags(generation, strongly_typed=not mixed),
            builder_flags=tuple(flags),
            calibration=None,
            qdq_calibration=calibration.algorithm,
            pinned=pinned,
            pin_precision=pin_precision if pinned else None,
            notes=tuple(notes),
        )

    device = options.calibration_device
    if calibration.algorithm is api.CalibrationAlgorithm.PERCENTILE and device is api.CalibrationDevice.GPU:
        raise InvalidInputError(
            "spec.calibration.algorithm: TensorRT's calibrators are entropy and minmax; for percentile set "
            "spec.tensorrt.calibrationDevice to cpu (ONNX Runtime computes the ranges) or int8Mode to explicit"
        )
    if generation is ApiGeneration.TRT10:
        notes.append("implicit INT8 calibration is deprecated since TensorRT 10.1 (explicit Q/DQ supersedes it)")
    flags = ["INT8"] + (["FP16"] if mixed else []) + ([constraint] if pinned else [])
    return BuildPlan(
        generation=generation,
        method=method,
        int8_mode=mode,
        source=Source.ONNX,
        network_flags=_network_flags(generation, strongly_typed=False),
        builder_flags=tuple(flags),
        calibration=CalibrationPlan(
            device=device,
            algorithm=calibration.algorithm,
            percentile=calibration.percentile if calibration.algorithm is api.CalibrationAlgorithm.PERCENTILE else None,
        ),
        qdq_calibration=None,
        pinned=pinned,
        pin_precision=pin_precision if pinned else None,
        notes=tuple(notes),
    )


def plan_fp32(generation: ApiGeneration) -> BuildPlan:
    """The FP32 engine the quantized one is compared with (same runtime, same GPU): no precision flags."""
    return BuildPlan(
        generation=generation,
        method=None,
        int8_mode=None,
        source=Source.ONNX,
        network_flags=_network_flags(generation, strongly_typed=False),
        builder_flags=(),
        calibration=None,
        qdq_calibration=None,
        pinned=(),
        pin_precision=None,
        notes=(),
    )
