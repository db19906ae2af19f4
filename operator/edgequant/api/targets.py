"""Deployment targets: one frozen row per device, and the pure resolver that fills a spec from its row.

A target answers the questions a job author should not have to: which method, what to do when the budget is
missed, and the ONNX Runtime options that depend on the *target's* instruction set (not on the CPU of the
worker that happens to quantize the model). It fills only what the spec leaves out (``model_fields_set``);
what the spec writes wins. Every value it fills is returned as a ``TargetChoice`` citing the rule it follows;
the rules and their vendor sources are in docs/targets.md (the ``rule`` ids are its anchors).

Rows name methods only; what a method needs or can do stays with the method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from edgequant.api import v1alpha1 as api


@dataclass(frozen=True)
class Rule:
    """A fact from a vendor's documentation that a target's default follows."""

    id: str
    """Anchor in docs/targets.md."""
    text: str
    source: str
    """The public page the fact comes from."""

    def cite(self) -> str:
        return f"{self.text} [{self.id}: {self.source}]"


@dataclass(frozen=True)
class TargetProfile:
    name: str
    title: str
    runtime: str
    """What runs the model on the device."""
    methods: tuple[str, ...]
    """Default methods in preference order; the first is primary (a sweep expands a target to all of them)."""
    method_rule: Rule
    on_failure: str | None = None
    """acceptance.onFailure when the spec leaves it out (None: the spec's default, fail)."""
    on_failure_rule: Rule | None = None
    onnx_reduce_range: str | None = None
    """spec.onnx.reduceRange for the target's CPU (None: not an ONNX Runtime CPU target)."""
    onnx_activation_type: str | None = None
    onnx_weight_type: str | None = None
    isa_rule: Rule | None = None
    integer_only_accelerator: bool = False
    """Ops the accelerator cannot run fall back to the host CPU: the artifact's ops are checked (Edge TPU)."""


# --------------------------------------------------------------------------- rules (docs/targets.md)

_XNNPACK = Rule(
    "xnnpack-int8",
    "TensorFlow Lite runs fully 8-bit quantized models on Arm CPUs through the XNNPACK delegate (float32 and INT8 "
    "operators; float16 weights are upcast on CPUs without native FP16 arithmetic)",
    "https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/delegates/xnnpack/README.md",
)
_RPI_FALLBACK = Rule(
    "rpi-float16-fallback",
    "when full INT8 misses the budget, float16 weights halve the size and keep float accuracy on the same CPU runtime",
    "https://ai.google.dev/edge/litert/models/post_training_float16_quant",
)
_EDGETPU = Rule(
    "edgetpu-full-int8",
    "the Edge TPU runs only TensorFlow Lite models that are fully 8-bit quantized (uint8/int8 tensors, constant "
    "parameters, static tensor sizes) and compiled for it; float16 and dynamic-range models do not run on it",
    "https://coral.ai/docs/edgetpu/models-intro/",
)
_TENSORRT = Rule(
    "tensorrt-int8",
    "TensorRT builds INT8 engines for NVIDIA GPUs (Jetson) from ONNX, calibrated or with Q/DQ nodes, and can keep "
    "chosen layers in FP16 (mixed precision) or build a whole FP16 engine",
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html",
)
_TENSORRT_FALLBACK = Rule(
    "tensorrt-fp16-fallback",
    "Jetson GPUs run FP16 engines natively: the fallback when INT8 (with sensitive layers in FP16) misses the budget",
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html",
)
_ORT_STATIC = Rule(
    "ort-static-cpu",
    "ONNX Runtime recommends static quantization (QDQ, calibrated activations) for CNNs on CPUs",
    "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html",
)
_ORT_NO_VNNI = Rule(
    "ort-reduce-range-avx2",
    "on x86-64 with AVX2/AVX512 but without VNNI, ONNX Runtime's U8S8 kernels use VPMADDUBSW, which can saturate; "
    "7-bit weights (reduce_range) avoid it, uint8 activations with int8 weights stay the fast format",
    "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html#when-and-why-do-i-need-to-try-u8u8",
)
_ORT_VNNI = Rule(
    "ort-vnni",
    "with AVX512-VNNI, AVX-VNNI or AMX the int8 dot products accumulate in int32 and do not saturate: full 8-bit "
    "range (reduce_range off), uint8 activations with int8 weights",
    "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html#when-and-why-do-i-need-to-try-u8u8",
)
_ORT_ARM = Rule(
    "ort-arm64",
    "on Arm64 the int8 kernels (dot-product instructions) accumulate in int32: no reduce_range needed",
    "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html",
)
_PORTABLE = Rule(
    "portable-reduce-range",
    "a model for unknown CPUs may meet x86 without VNNI, whose U8S8 kernels can saturate: 7-bit weights are correct "
    "everywhere at a small precision cost",
    "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html#when-and-why-do-i-need-to-try-u8u8",
)


_ROWS = (
    TargetProfile(
        name="rpi-xnnpack",
        title="Raspberry Pi 4/5 (arm64 CPU)",
        runtime="TensorFlow Lite / LiteRT with XNNPACK",
        methods=("tflite-int8", "tflite-float16", "onnx-static"),
        method_rule=_XNNPACK,
        on_failure="degrade",
        on_failure_rule=_RPI_FALLBACK,
        onnx_reduce_range="never",
        onnx_activation_type="uint8",
        onnx_weight_type="int8",
        isa_rule=_ORT_ARM,
    ),
    TargetProfile(
        name="coral-edgetpu",
        title="Coral Edge TPU",
        runtime="TensorFlow Lite with the Edge TPU delegate (after edgetpu_compiler)",
        methods=("tflite-int8", "tflite-qat"),
        method_rule=_EDGETPU,
        integer_only_accelerator=True,
    ),
    TargetProfile(
        name="jetson",
        title="NVIDIA Jetson (GPU)",
        runtime="TensorRT",
        methods=("tensorrt-int8", "tensorrt-mixed", "tensorrt-fp16"),
        method_rule=_TENSORRT,
        on_failure="degrade",
        on_failure_rule=_TENSORRT_FALLBACK,
    ),
    TargetProfile(
        name="x86-avx2",
        title="x86-64 CPU with AVX2, without VNNI",
        runtime="ONNX Runtime (CPU)",
        methods=("onnx-static", "onnx-dynamic", "tflite-int8"),
        method_rule=_ORT_STATIC,
        onnx_reduce_range="always",
        onnx_activation_type="uint8",
        onnx_weight_type="int8",
        isa_rule=_ORT_NO_VNNI,
    ),
    TargetProfile(
        name="x86-vnni",
        title="x86-64 CPU with AVX512-VNNI, AVX-VNNI or AMX",
        runtime="ONNX Runtime (CPU)",
        methods=("onnx-static", "onnx-dynamic", "tflite-int8"),
        method_rule=_ORT_STATIC,
        onnx_reduce_range="never",
        onnx_activation_type="uint8",
        onnx_weight_type="int8",
        isa_rule=_ORT_VNNI,
    ),
    TargetProfile(
        name="arm64-cpu",
        title="Arm64 CPU (servers, phones, SBCs)",
        runtime="ONNX Runtime or TensorFlow Lite (CPU)",
        methods=("onnx-static", "tflite-int8", "tflite-float16"),
        method_rule=_ORT_STATIC,
        onnx_reduce_range="never",
        onnx_activation_type="uint8",
        onnx_weight_type="int8",
        isa_rule=_ORT_ARM,
    ),
    TargetProfile(
        name="generic",
        title="Any CPU (portable)",
        runtime="ONNX Runtime or TensorFlow Lite (CPU)",
        methods=("tflite-int8", "onnx-static", "tflite-float16"),
        method_rule=_XNNPACK,
        onnx_reduce_range="always",
        onnx_activation_type="uint8",
        onnx_weight_type="int8",
        isa_rule=_PORTABLE,
    ),
)

TARGETS: Mapping[str, TargetProfile] = MappingProxyType({row.name: row for row in _ROWS})

#: Spec fields a target may fill in. The CRD declares no API-server default for them (the worker's model applies
#: the same defaults), so that "left out" in a manifest stays left out in the stored object.
FILLABLE_FIELDS = (
    "spec.method",
    "spec.acceptance.onFailure",
    "spec.onnx.reduceRange",
    "spec.onnx.activationType",
    "spec.onnx.weightType",
)

#: Methods that read spec.onnx.reduceRange (ONNX Runtime quantizes their weights, or torch-qat's activations).
_READS_REDUCE_RANGE = frozenset({"onnx-static", "onnx-dynamic", "torch-qat"})
#: Methods that read spec.onnx.activationType / weightType.
_READS_ONNX_TYPES = frozenset({"onnx-static", "onnx-dynamic"})


@dataclass(frozen=True)
class TargetChoice:
    """One value a target filled in, and why."""

    field: str
    """Spec path, e.g. spec.method."""
    value: str
    reason: str
    """The rule it follows, with its source."""


# --------------------------------------------------------------------------- method


def _fits(method: api.Method, fmt: api.ModelFormat | None, has_calibration: bool, has_training: bool) -> str:
    """Why ``method`` cannot run this spec ('' when it can)."""
    if fmt is not None and fmt not in method.formats:
        return f"{method.value} does not take a {fmt.value} model"
    if method.needs_calibration and not has_calibration:
        return f"{method.value} needs calibration data"
    if method.needs_training and not has_training:
        return f"{method.value} needs training data"
    return ""


def choose_method(
    profile: TargetProfile, fmt: api.ModelFormat | None, *, has_calibration: bool, has_training: bool
) -> tuple[api.Method, str]:
    """The first of the target's methods that takes the model and the data the spec gives, and why.

    ValueError naming the fix when none does.
    """
    skipped: list[str] = []
    for name in profile.methods:
        method = api.Method.named(name)
        problem = _fits(method, fmt, has_calibration, has_training)
        if not problem:
            why = f"{profile.name}: {profile.method_rule.cite()}"
            if skipped:
                why += f"; skipped {', '.join(skipped)}"
            return method, why
        skipped.append(problem)
    raise ValueError(
        f"spec.target {profile.name} runs {', '.join(profile.methods)} and none fits this spec ({'; '.join(skipped)}): "
        "give the data or model format the first one needs, or set spec.method"
    )


def _get(data: Any, *names: str) -> Any:
    for name in names:
        if isinstance(data, dict) and name in data:
            return data[name]
        if not isinstance(data, dict) and hasattr(data, name):
            return getattr(data, name)
    return None


def method_for(data: dict[str, Any]) -> api.Method | None:
    """The target's method for a raw spec that names none (None for an unknown target: its enum error is reported)."""
    profile = TARGETS.get(str(getattr(data.get("target"), "value", data.get("target"))))
    if profile is None:
        return None
    model = _get(data, "model") or {}
    fmt_value = _get(model, "format")
    uri = _get(model, "uri")
    try:
        fmt = (
            api.ModelFormat(getattr(fmt_value, "value", fmt_value))
            if fmt_value
            else (api.infer_model_format(uri) if isinstance(uri, str) else None)
        )
    except ValueError:
        fmt = None  # the model's own validation names the bad format
    method, _why = choose_method(
        profile,
        fmt,
        has_calibration=_get(data, "calibration") is not None,
        has_training=_get(data, "training") is not None,
    )
    return method


# --------------------------------------------------------------------------- resolver


def _unset(model: api.ApiModel, parent: api.ApiModel, parent_field: str, field: str) -> bool:
    return parent_field not in parent.model_fields_set or field not in model.model_fields_set


def resolve_target(spec: api.QuantizationJobSpec) -> tuple[api.QuantizationJobSpec, list[TargetChoice]]:
    """``spec`` with what its target fills in, and each value chosen with its reason. Pure; idempotent."""
    if spec.target is None:
        return spec, []
    profile = TARGETS[spec.target.value]
    choices: list[TargetChoice] = []
    update: dict[str, Any] = {}
    method = spec.method
    if "method" not in spec.model_fields_set:
        method, why = choose_method(
            profile,
            spec.model.resolved_format,
            has_calibration=spec.calibration is not None,
            has_training=spec.training is not None,
        )
        update["method"] = method
        choices.append(TargetChoice("spec.method", method.value, why))
        if method is api.Method.TFLITE_INT8 and profile.integer_only_accelerator:
            choices.append(
                TargetChoice("artifact input/output", "uint8", f"{profile.name}: {profile.method_rule.cite()}")
            )
    acceptance = spec.acceptance
    if profile.on_failure is not None and _unset(acceptance, spec, "acceptance", "on_failure"):
        assert profile.on_failure_rule is not None
        update["acceptance"] = acceptance.model_copy(update={"on_failure": api.OnFailure(profile.on_failure)})
        choices.append(
            TargetChoice(
                "spec.acceptance.onFailure", profile.on_failure, f"{profile.name}: {profile.on_failure_rule.cite()}"
            )
        )
    onnx = spec.onnx
    onnx_update: dict[str, Any] = {}
    if profile.isa_rule is not None and method.value in _READS_REDUCE_RANGE:
        why = f"{profile.name}: {profile.isa_rule.cite()}; the worker's own CPU does not decide this"
        if profile.onnx_reduce_range and _unset(onnx, spec, "onnx", "reduce_range"):
            onnx_update["reduce_range"] = api.ReduceRange(profile.onnx_reduce_range)
            choices.append(TargetChoice("spec.onnx.reduceRange", profile.onnx_reduce_range, why))
        if method.value in _READS_ONNX_TYPES:
            for field, wire, value in (
                ("activation_type", "activationType", profile.onnx_activation_type),
                ("weight_type", "weightType", profile.onnx_weight_type),
            ):
                if value and _unset(onnx, spec, "onnx", field):
                    onnx_update[field] = api.OnnxQuantType(value)
                    choices.append(TargetChoice(f"spec.onnx.{wire}", value, why))
    if onnx_update:
        update["onnx"] = onnx.model_copy(update=onnx_update)
    resolved = spec.model_copy(update=update) if update else spec
    return resolved, choices


def target_notes(spec: api.QuantizationJobSpec) -> list[str]:
    """What the report must say about the target besides its choices."""
    if spec.target is None:
        return []
    profile = TARGETS[spec.target.value]
    notes = [
        f"target {profile.name} ({profile.title}, {profile.runtime}): latency in this report is measured on the worker's "
        "CPU, not on the target"
    ]
    if profile.integer_only_accelerator:
        notes.append(
            "the Edge TPU compiler (edgetpu_compiler) is not run here: ops were checked against its documented supported "
            "operations and constraints; compile the artifact with it before deploying"
        )
        if spec.mixed_precision.mode is not api.MixedPrecisionMode.OFF:
            notes.append(
                "layers kept in float by mixedPrecision run on the host CPU, not the Edge TPU (and split the graph)"
            )
    return notes
