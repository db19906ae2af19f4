"""Typed settings for ONNX Runtime's quantizers, and the pure choices that fill them from a spec and a CPU.

ONNX Runtime takes a dozen keyword arguments plus an untyped ``extra_options``
dict; everything edgequant passes goes through these two models (unknown
keys rejected), so a call is reviewable and testable without running it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import OnnxRuntimeBackendOptions
from edgequant.util.cpu import CpuFeatures
from edgequant.util.errors import InvalidInputError


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DynamicSettings(_Settings):
    """onnx-dynamic: weights quantized offline, activations quantized to uint8 at run time."""

    per_channel: bool = True
    reduce_range: bool = False
    weight_type: api.OnnxQuantType = api.OnnxQuantType.INT8
    preprocess: bool = True
    """ORT's quant_pre_process (shape inference, basic optimization) before quantizing."""
    keep_float: tuple[str, ...] = ()
    """Node names (of the pre-processed model) left unquantized."""


class StaticSettings(_Settings):
    """Static QDQ quantization: ranges calibrated on representative data, Q/DQ pairs in the graph."""

    algorithm: api.CalibrationAlgorithm = api.CalibrationAlgorithm.MINMAX
    percentile: float = Field(99.999, gt=50, le=100)
    per_channel: bool = True
    reduce_range: bool = False
    weight_type: api.OnnxQuantType = api.OnnxQuantType.INT8
    activation_type: api.OnnxQuantType = api.OnnxQuantType.UINT8
    symmetric_activations: bool = False
    """Zero point 0 for activations (TensorRT's explicit quantization needs it)."""
    symmetric_weights: bool = True
    preprocess: bool = True
    keep_float: tuple[str, ...] = ()
    sixteen_bit_weights: tuple[str, ...] = ()
    """Weight initializers quantized to int16 instead of weight_type (spec.ptq.sixteenBitWeights' choice)."""
    sixteen_bit_activations: tuple[str, ...] = ()
    """Activation tensors quantized to 16 bit (uint16 or int16, as activation_type) instead of 8 (spec.ptq.sixteenBitActivations' choice)."""
    float_outputs: bool = False
    """Graph outputs stay float: the Q/DQ pair quantize_static ends each one with is dropped (spec.ptq.floatOutputs)."""

    @model_validator(mode="after")
    def _supported_pair(self) -> StaticSettings:
        if self.activation_type is api.OnnxQuantType.INT8 and self.weight_type is api.OnnxQuantType.UINT8:
            raise ValueError("int8 activations with uint8 weights is not a format ONNX Runtime runs")
        return self


@dataclass(frozen=True)
class ReduceRangeChoice:
    enabled: bool
    note: str
    """One sentence for the report: what was chosen and why."""
    warning: bool = False
    """True when the choice risks accuracy on this CPU (reduceRange never without VNNI)."""


def choose_reduce_range(
    mode: api.ReduceRange, *, cpu: CpuFeatures, weight_type: api.OnnxQuantType
) -> ReduceRangeChoice:
    """7-bit quantization where x86 u8s8 kernels would saturate (no VNNI/AMX), as spec.onnx.reduceRange asks."""
    where = cpu.describe()
    target = "if the edge CPU is x86 without VNNI, set spec.onnx.reduceRange: always"
    if mode is api.ReduceRange.ALWAYS:
        extra = "; this CPU has VNNI/AMX and would not need it" if cpu.u8s8_saturates is False and cpu.is_x86 else ""
        return ReduceRangeChoice(True, f"reduce_range on (spec.onnx.reduceRange always){extra}; CPU {where}")
    saturates = cpu.u8s8_saturates if weight_type is api.OnnxQuantType.INT8 else False
    if mode is api.ReduceRange.NEVER:
        if saturates:
            return ReduceRangeChoice(
                False,
                f"reduce_range off (spec.onnx.reduceRange never) although CPU {where} lacks VNNI/AMX: its u8s8 int8 "
                "kernels can saturate and cost accuracy (1-2 points seen on per-channel CNNs); use reduceRange auto or always",
                warning=True,
            )
        return ReduceRangeChoice(False, f"reduce_range off (spec.onnx.reduceRange never); CPU {where}")
    if weight_type is api.OnnxQuantType.UINT8:
        return ReduceRangeChoice(
            False, f"reduce_range off: uint8 weights run on u8u8 kernels, which do not saturate; CPU {where}"
        )
    if saturates is None:
        return ReduceRangeChoice(
            False,
            f"reduce_range off: CPU features unknown ({where}); {target}",
            warning=True,
        )
    if saturates:
        return ReduceRangeChoice(
            True,
            f"reduce_range on: CPU {where} lacks VNNI/AMX, so ONNX Runtime's u8s8 int8 kernels would saturate without 7-bit quantization",
        )
    if cpu.is_x86:
        return ReduceRangeChoice(False, f"reduce_range off: CPU {where} has VNNI/AMX (no u8s8 saturation); {target}")
    return ReduceRangeChoice(False, f"reduce_range off: CPU {where} accumulates int8 products in int32")


def static_settings(
    options: OnnxRuntimeBackendOptions, *, cpu: CpuFeatures, keep_float: tuple[str, ...] = ()
) -> tuple[StaticSettings, ReduceRangeChoice]:
    """onnx-static's settings from spec.onnx, spec.calibration and the CPU."""
    onnx = options.onnx
    choice = choose_reduce_range(onnx.reduce_range, cpu=cpu, weight_type=onnx.weight_type)
    calibration = options.calibration
    if calibration is None:
        raise InvalidInputError("spec.calibration: onnx-static calibrates activation ranges; add calibration.dataset")
    settings = StaticSettings(
        algorithm=calibration.algorithm,
        percentile=calibration.percentile,
        per_channel=onnx.per_channel,
        reduce_range=choice.enabled,
        weight_type=onnx.weight_type,
        activation_type=onnx.activation_type,
        preprocess=onnx.preprocess,
        keep_float=keep_float,
        float_outputs=options.ptq.float_outputs,
    )
    return settings, choice


def dynamic_settings(
    options: OnnxRuntimeBackendOptions, *, cpu: CpuFeatures, keep_float: tuple[str, ...] = ()
) -> tuple[DynamicSettings, ReduceRangeChoice]:
    """onnx-dynamic's settings from spec.onnx and the CPU."""
    onnx = options.onnx
    choice = choose_reduce_range(onnx.reduce_range, cpu=cpu, weight_type=onnx.weight_type)
    settings = DynamicSettings(
        per_channel=onnx.per_channel,
        reduce_range=choice.enabled,
        weight_type=onnx.weight_type,
        preprocess=onnx.preprocess,
        keep_float=keep_float,
    )
    return settings, choice
