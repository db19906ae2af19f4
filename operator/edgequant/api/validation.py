"""Offline validation of QuantizationJob manifests: every problem with its field path and a fix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from edgequant.api import v1alpha1 as api


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} (fix: {self.fix})"


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue
        else:
            path += ("." if path else "") + str(part)
    return path or "(document)"


def _fix_for(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return f"add the required field `{error['loc'][-1]}`"
    if kind == "extra_forbidden":
        return "remove it or fix its spelling (see `kubectl explain quantizationjob.spec`)"
    if kind in ("enum", "literal_error"):
        return f"use one of {ctx.get('expected', 'the allowed values')}"
    if kind.startswith(("greater_than", "less_than")):
        return "use a value in the allowed range"
    if kind in (
        "int_parsing",
        "int_type",
        "float_parsing",
        "float_type",
        "bool_parsing",
        "string_type",
        "list_type",
        "dict_type",
        "model_type",
    ):
        return "use the documented type for this field"
    if kind in ("too_short", "too_long"):
        return "give the documented number of items"
    if kind == "string_pattern_mismatch":
        return f"match the pattern {ctx.get('pattern', '')}"
    return "see the message and `kubectl explain quantizationjob.spec`"


def _cross_field_problems(message: str) -> list[Problem]:
    """Cross-field rule failures arrive as one ValueError naming each rule's field."""
    by_text = {r.text: r for r in api.CROSS_FIELD_RULES}
    problems = []
    for chunk in message.split("; "):
        field, _, text = chunk.partition(": ")
        rule = by_text.get(text)
        if rule is not None:
            problems.append(Problem(field=field, message=rule.message, fix=rule.fix))
    return problems


# --------------------------------------------------------------------------- warnings


@dataclass(frozen=True)
class WarningRule:
    """A setting that does not fail the job but is ignored or probably wrong: printed by `edgequant validate`
    and written to the report's notes. ``explain`` returns the message ("" when the rule does not apply)."""

    field: str
    explain: Callable[[api.QuantizationJobSpec], str]
    fix: str


_ONNX_OPTION_USERS = {api.Method.ONNX_DYNAMIC, api.Method.ONNX_STATIC}
_DEFAULT_PERCENTILE = api.Calibration.model_fields["percentile"].default


def _calibration_unused(s: api.QuantizationJobSpec) -> str:
    if s.calibration is None or s.method.needs_calibration or s.method.needs_training:
        return ""
    return f"{s.method.value} takes no calibration data, so calibration is ignored"


def _percentile_unused(s: api.QuantizationJobSpec) -> str:
    cal = s.calibration
    if cal is None or cal.algorithm is api.CalibrationAlgorithm.PERCENTILE or cal.percentile == _DEFAULT_PERCENTILE:
        return ""
    return f"calibration.percentile {cal.percentile:g} is read only by calibration.algorithm percentile, not {cal.algorithm.value}"


def _algorithm_unused(s: api.QuantizationJobSpec) -> str:
    cal = s.calibration
    if cal is None or s.method.row.range_algorithm != "minmax" or cal.algorithm is api.CalibrationAlgorithm.MINMAX:
        return ""
    return f"{s.method.value} calibrates with min/max ranges (TFLiteConverter), so calibration.algorithm {cal.algorithm.value} is ignored"


def _tensorrt_unused(s: api.QuantizationJobSpec) -> str:
    if s.method.row.options == "tensorrt" or s.tensorrt == api.TensorRTOptions():
        return ""
    return f"spec.tensorrt is read only by tensorrt-* methods, so {s.method.value} ignores it"


def _onnx_unused(s: api.QuantizationJobSpec) -> str:
    changed = [name for name, value in s.onnx if value != api.OnnxOptions.model_fields[name].default]
    if not changed or s.method in _ONNX_OPTION_USERS or s.method.family is api.MethodFamily.TENSORRT:
        return ""  # tensorrt-* rank layers through ONNX Runtime with onnx.preprocess and onnx.perChannel
    if s.method is api.Method.TORCH_QAT:
        changed = [name for name in changed if name != "reduce_range"]
        if not changed:
            return ""
        return (
            f"torch-qat reads only onnx.reduceRange, so onnx.{', onnx.'.join(_camel(n) for n in changed)} are ignored"
        )
    return f"spec.onnx is read only by onnx-dynamic, onnx-static (and torch-qat for reduceRange), so {s.method.value} ignores it"


def _dynamic_activation_type(s: api.QuantizationJobSpec) -> str:
    if s.method is not api.Method.ONNX_DYNAMIC or s.onnx.activation_type is api.OnnxQuantType.UINT8:
        return ""
    return "onnx-dynamic quantizes activations to uint8 at run time, so onnx.activationType int8 is ignored"


def _pins_unused(s: api.QuantizationJobSpec) -> str:
    mp = s.mixed_precision
    if not mp.pinned_layers or mp.mode is api.MixedPrecisionMode.MANUAL:
        return ""
    return f"mixedPrecision.pinnedLayers are used only with mixedPrecision.mode manual, not {mp.mode.value}"


def _calibration_device_unused(s: api.QuantizationJobSpec) -> str:
    t = s.tensorrt
    if s.method.family is not api.MethodFamily.TENSORRT or t.int8_mode is not api.TensorRTInt8Mode.EXPLICIT:
        return ""
    if t.calibration_device is api.TensorRTOptions.model_fields["calibration_device"].default:
        return ""
    return "tensorrt.calibrationDevice applies to implicit INT8 only, so int8Mode explicit ignores it"


def _ptq_unused(s: api.QuantizationJobSpec) -> str:
    if s.method is api.Method.ONNX_STATIC:
        return ""
    if s.method is api.Method.TFLITE_INT8:
        ignored = [
            name
            for name in s.ptq.TECHNIQUES
            if name not in ("bias_correction", "adaptive_rounding") and getattr(s.ptq, name) is api.Technique.ON
        ]
        if ignored:
            return (
                "tflite-int8 applies ptq.biasCorrection and ptq.adaptiveRounding only (TFLiteConverter calibrates min/max ranges), "
                f"so ptq.{', ptq.'.join(_camel(n) for n in ignored)} on is ignored"
            )
        if "float_outputs" in s.ptq.model_fields_set:
            return "tflite-int8 artifacts take and give uint8 (their last layer writes int8), so ptq.floatOutputs is ignored"
        return ""
    if s.ptq == api.PostTraining():
        return ""
    return f"spec.ptq is read only by onnx-static and tflite-int8, so {s.method.value} ignores it"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


WARNING_RULES: tuple[WarningRule, ...] = (
    WarningRule(
        "spec.calibration",
        _calibration_unused,
        "remove spec.calibration, or use a calibrated method (tflite-int8, onnx-static, tensorrt-int8)",
    ),
    WarningRule(
        "spec.calibration.percentile",
        _percentile_unused,
        "set calibration.algorithm to percentile to use it, or remove calibration.percentile",
    ),
    WarningRule(
        "spec.calibration.algorithm",
        _algorithm_unused,
        "remove calibration.algorithm, or use onnx-static or tensorrt-int8 for entropy or percentile ranges",
    ),
    WarningRule("spec.tensorrt", _tensorrt_unused, "remove spec.tensorrt, or use a tensorrt-* method"),
    WarningRule("spec.onnx", _onnx_unused, "remove the ignored spec.onnx fields, or use an onnx-* method"),
    WarningRule(
        "spec.onnx.activationType",
        _dynamic_activation_type,
        "remove onnx.activationType, or use onnx-static for int8 activations",
    ),
    WarningRule(
        "spec.mixedPrecision.pinnedLayers",
        _pins_unused,
        "set mixedPrecision.mode to manual to keep them in float, or remove mixedPrecision.pinnedLayers",
    ),
    WarningRule(
        "spec.tensorrt.calibrationDevice",
        _calibration_device_unused,
        "remove tensorrt.calibrationDevice, or set tensorrt.int8Mode to implicit",
    ),
    WarningRule(
        "spec.ptq",
        _ptq_unused,
        "remove the ignored spec.ptq fields, or use onnx-static for equalization and range search",
    ),
    WarningRule(
        "spec.model.input.scaling",
        lambda s: s.model.input.scaling.units_warning(),
        "multiply scaling.mean and scaling.std by 255 to match scale, or set scaling.scale to 1/255 (0.00392156862745098) if the model was trained on 0-1 inputs",
    ),
)


def spec_warnings(spec: api.QuantizationJobSpec) -> list[Problem]:
    """Settings that are ignored or look wrong; they never fail validation or the job."""
    warnings = []
    for rule in WARNING_RULES:
        message = rule.explain(spec)
        if message:
            warnings.append(Problem(field=rule.field, message=message, fix=rule.fix))
    return warnings


def validate_document(doc: Any) -> tuple[api.QuantizationJob | None, list[Problem]]:
    """Validate one parsed manifest; returns the model (when valid) and all problems found."""
    if not isinstance(doc, dict):
        return None, [
            Problem(
                "(document)", "not a mapping", "write a QuantizationJob manifest (apiVersion, kind, metadata, spec)"
            )
        ]
    try:
        return api.QuantizationJob.model_validate(doc), []
    except ValidationError as exc:
        problems: list[Problem] = []
        for error in exc.errors(include_url=False):
            msg = str(error["msg"]).removeprefix("Value error, ")
            cross = _cross_field_problems(msg)
            if cross:
                problems.extend(cross)
                continue
            field = _loc_to_path(tuple(error["loc"]))
            if error["type"] == "value_error" and ": " in msg:
                head, _, tail = msg.partition(": ")
                problems.append(Problem(field, head, tail))
            else:
                problems.append(Problem(field, msg, _fix_for(error)))
        return None, problems
