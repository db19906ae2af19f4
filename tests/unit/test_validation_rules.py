"""Validation rules say what is wrong and, separately, what to change; warnings flag ignored or suspicious settings."""

from __future__ import annotations

import re
from typing import Any

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api import validation

#: A fix starts with an action ...
ACTIONS = ("add ", "set ", "use ", "lower ", "list ", "remove ", "give ", "multiply ")
#: ... and names a spec field (a camelCase path with a dot, or a top-level spec section).
FIELD = re.compile(r"\b[a-z][A-Za-z0-9]*\.[a-z][A-Za-z0-9]*\b|\bspec\.[a-z]+|\bmodel\.format\b")


def _assert_actionable(message: str, fix: str) -> None:
    assert fix != message and fix not in message and message not in fix
    assert fix.startswith(ACTIONS), fix
    assert FIELD.search(fix), fix


@pytest.mark.parametrize("rule", api.CROSS_FIELD_RULES, ids=lambda r: r.field)
def test_every_cross_field_rule_has_a_fix_of_its_own(rule: api.CrossFieldRule) -> None:
    _assert_actionable(rule.message, rule.fix)
    assert "; " not in rule.text  # failures are joined with "; "


@pytest.mark.parametrize("rule", validation.WARNING_RULES, ids=lambda r: r.field)
def test_every_warning_rule_has_a_fix(rule: validation.WarningRule) -> None:
    assert rule.fix.startswith(ACTIONS) and FIELD.search(rule.fix), rule.fix


def _doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"uri": "s3://m/model.onnx", "input": {"shape": [3, 8, 8], "layout": "NCHW"}},
        "method": "onnx-static",
        "calibration": {"dataset": {"uri": "s3://d/cal/"}},
        "output": {"uri": "s3://a/out/"},
    }
    base.update(spec)
    return {"apiVersion": "edgequant.io/v1alpha1", "kind": "QuantizationJob", "metadata": {"name": "x"}, "spec": base}


def test_a_broken_rule_reports_message_and_fix_apart() -> None:
    doc = _doc(mixedPrecision={"mode": "auto"})
    job, problems = validation.validate_document(doc)
    assert job is None
    (problem,) = problems
    assert problem.field == "spec.mixedPrecision.mode"
    assert "evaluation.dataset" in problem.fix and "evaluation.dataset" not in problem.message
    assert str(problem).count("mixedPrecision.mode auto") == 1  # the rule's text is not repeated as its fix


def _warnings(**spec: Any) -> dict[str, str]:
    job, problems = validation.validate_document(_doc(**spec))
    assert problems == [] and job is not None
    return {w.field: w.message for w in validation.spec_warnings(job.spec)}


def test_a_plain_spec_has_no_warnings() -> None:
    assert _warnings() == {}
    # defaults written out (as the API server's defaulting does) are not "set"
    assert (
        _warnings(calibration={"dataset": {"uri": "s3://d/cal/"}, "percentile": 99.999}, onnx={"perChannel": True})
        == {}
    )


def test_percentile_with_another_algorithm_warns() -> None:
    w = _warnings(calibration={"dataset": {"uri": "s3://d/cal/"}, "algorithm": "minmax", "percentile": 99.9})
    assert "not minmax" in w["spec.calibration.percentile"]
    assert (
        _warnings(calibration={"dataset": {"uri": "s3://d/cal/"}, "algorithm": "percentile", "percentile": 99.9}) == {}
    )


def test_settings_the_method_ignores_warn() -> None:
    keras = {"uri": "s3://m/model.keras", "input": {"shape": [8, 8, 3]}}
    w = _warnings(model=keras, method="tflite-dynamic-range", tensorrt={"batchSize": 8}, onnx={"reduceRange": "always"})
    assert set(w) == {"spec.calibration", "spec.tensorrt", "spec.onnx"}
    assert "tflite-dynamic-range takes no calibration data" in w["spec.calibration"]
    w = _warnings(
        model=keras, method="tflite-int8", calibration={"dataset": {"uri": "s3://d/cal/"}, "algorithm": "entropy"}
    )
    assert "calibration.algorithm entropy is ignored" in w["spec.calibration.algorithm"]
    torch = {"uri": "s3://m/model.pt2", "input": {"shape": [3, 8, 8], "layout": "NCHW"}}
    qat = {
        "model": torch,
        "method": "torch-qat",
        "training": {"dataset": {"uri": "s3://d/train/"}},
        "calibration": None,
    }
    assert _warnings(**qat, onnx={"reduceRange": "always"}) == {}
    assert "onnx.perChannel" in _warnings(**qat, onnx={"perChannel": False})["spec.onnx"]
    assert (
        "activationType"
        in _warnings(method="onnx-dynamic", calibration=None, onnx={"activationType": "int8"})[
            "spec.onnx.activationType"
        ]
    )
    assert (
        "not auto"
        in _warnings(
            mixedPrecision={"mode": "auto", "pinnedLayers": ["conv"]}, evaluation={"dataset": {"uri": "s3://d/e/"}}
        )["spec.mixedPrecision.pinnedLayers"]
    )


def test_mean_std_in_0_255_units_with_scale_1_over_255_is_an_error_naming_the_fix() -> None:
    imagenet = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    job, problems = validation.validate_document(
        _doc(model={"uri": "s3://m/model.onnx", "input": {"shape": [3, 8, 8], "layout": "NCHW", "scaling": imagenet}})
    )
    assert job is None
    (problem,) = problems
    assert problem.field == "spec.model.input.scaling" and "scaling.mean" in problem.message
    assert "mean [0.485, 0.456, 0.406]" in problem.fix and "scale to 1.0" in problem.fix
    # the same numbers with scale 1.0 are right (caffe/torchvision in 0-255 units), and so is mean subtraction only
    assert api.Scaling(scale=1.0, **imagenet).units_error() == ""
    assert api.Scaling(scale=1.0, mean=[103.9, 116.8, 123.7], std=[1.0, 1.0, 1.0]).units_error() == ""
    assert api.Scaling(scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]).units_error() == ""
    assert api.Scaling(scale=1 / 127.5, offset=-1.0, mean=[0.0], std=[1.0]).units_error() == ""
    # std alone in the wrong units: the normalised input would span under a quarter unit
    with pytest.raises(ValueError, match="near-constant input"):
        api.Scaling(scale=1 / 255, mean=[0.5], std=[58.0])


def test_mean_std_in_0_1_units_with_scale_1_is_a_warning() -> None:
    """Possible statistics (std 0.229 of 0-255 data), just implausible: the run's input-range check decides."""
    shape = {"shape": [3, 8, 8], "layout": "NCHW"}
    scaling = {"scale": 1.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    w = _warnings(model={"uri": "s3://m/model.onnx", "input": {**shape, "scaling": scaling}})
    assert "look like 0-1 units" in w["spec.model.input.scaling"]
    assert api.Scaling(scale=1.0, mean=[0.0], std=[1.0]).units_warning() == ""  # identity: nothing to warn about
    assert api.Scaling(scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]).units_warning() == ""


def test_ptq_warns_only_where_the_method_ignores_it() -> None:
    keras = {"uri": "s3://m/model.keras", "input": {"shape": [8, 8, 3]}}
    cal = {"dataset": {"uri": "s3://d/cal/"}}
    # tflite-int8 applies bias correction and adaptive rounding: the defaults and those two say nothing
    assert _warnings(model=keras, method="tflite-int8", calibration=cal, ptq={"biasCorrection": "on"}) == {}
    assert _warnings(model=keras, method="tflite-int8", calibration=cal, ptq={"adaptiveRounding": "on"}) == {}
    w = _warnings(model=keras, method="tflite-int8", calibration=cal, ptq={"crossLayerEqualization": "on"})
    assert "ptq.crossLayerEqualization on is ignored" in w["spec.ptq"]
    w = _warnings(model=keras, method="tflite-int8", calibration=cal, ptq={"sixteenBitWeights": "on"})
    assert "ptq.sixteenBitWeights on is ignored" in w["spec.ptq"]
    w = _warnings(model=keras, method="tflite-int8", calibration=cal, ptq={"floatOutputs": True})
    assert "ptq.floatOutputs is ignored" in w["spec.ptq"]
    assert _warnings(calibration=cal, ptq={"crossLayerEqualization": "on"}) == {}  # onnx-static
    assert _warnings(calibration=cal, ptq={"floatOutputs": False}) == {}
    w = _warnings(model=keras, method="tflite-float16", calibration=None, ptq={"biasCorrection": "on"})
    assert "tflite-float16 ignores it" in w["spec.ptq"]
