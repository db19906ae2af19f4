"""spec.target: the table, the resolver (fills only what the spec leaves out, each value with its rule), the CRD."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.targets import TARGETS, resolve_target, target_notes
from edgequant.controller import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "targets.md"


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": {"uri": "file:///m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "calibration": {"dataset": {"uri": "file:///cal/"}},
        "output": {"uri": "file:///out/"},
    }
    doc.update(overrides)
    return doc


def _spec(**overrides: Any) -> api.QuantizationJobSpec:
    return api.QuantizationJobSpec.model_validate(_doc(**overrides))


ONNX_MODEL = {"uri": "file:///m.onnx", "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"}}


def test_every_target_has_a_row_whose_methods_exist_and_whose_rules_are_documented() -> None:
    assert set(TARGETS) == {t.value for t in api.Target}
    doc = DOC.read_text()
    for name, row in TARGETS.items():
        assert row.name == name and row.methods
        assert all(api.Method(m) for m in row.methods)
        for rule in (row.method_rule, row.on_failure_rule, row.isa_rule):
            if rule is not None:
                assert rule.source.startswith("https://") and f"`{rule.id}`" in doc, rule.id
        assert f"`{name}`" in doc


@pytest.mark.parametrize(
    ("target", "model", "method"),
    [
        ("coral-edgetpu", None, "tflite-int8"),
        ("rpi-xnnpack", None, "tflite-int8"),
        ("jetson", ONNX_MODEL, "tensorrt-int8"),
        ("x86-avx2", ONNX_MODEL, "onnx-static"),
        ("x86-vnni", ONNX_MODEL, "onnx-static"),
        ("arm64-cpu", ONNX_MODEL, "onnx-static"),
        ("generic", None, "tflite-int8"),
    ],
)
def test_a_target_picks_its_primary_method_and_cites_its_rule(
    target: str, model: dict[str, Any] | None, method: str
) -> None:
    spec = _spec(target=target, **({"model": model} if model else {}))
    assert spec.method.value == method and "method" not in spec.model_fields_set
    resolved, choices = resolve_target(spec)
    first = choices[0]
    assert (first.field, first.value) == ("spec.method", method)
    assert re.search(r"\[[a-z0-9-]+: https://", first.reason), first.reason
    assert resolved.method.value == method


def test_the_method_skips_what_the_model_format_or_data_cannot_run_and_says_so() -> None:
    # x86-avx2 prefers onnx-static, but a Keras model only fits its TFLite method
    spec = _spec(target="x86-avx2")
    _resolved, choices = resolve_target(spec)
    assert choices[0].value == "tflite-int8" and "onnx-static does not take a keras model" in choices[0].reason
    # rpi without calibration data: tflite-int8 cannot calibrate, tflite-float16 needs nothing
    no_cal = api.QuantizationJobSpec.model_validate(
        {k: v for k, v in _doc(target="rpi-xnnpack").items() if k != "calibration"}
    )
    assert no_cal.method is api.Method.TFLITE_FLOAT16


def test_coral_without_the_data_its_methods_need_is_refused_naming_the_fix() -> None:
    doc = {k: v for k, v in _doc(target="coral-edgetpu").items() if k != "calibration"}
    with pytest.raises(
        ValueError, match=r"coral-edgetpu runs tflite-int8, tflite-qat .*needs calibration data.*set spec.method"
    ):
        api.QuantizationJobSpec.model_validate(doc)


def test_neither_method_nor_target_is_refused() -> None:
    with pytest.raises(ValueError, match="set method .* or target"):
        api.QuantizationJobSpec.model_validate(_doc())


def test_coral_chooses_uint8_io_and_notes_that_the_compiler_is_not_run() -> None:
    spec = _spec(target="coral-edgetpu")
    _resolved, choices = resolve_target(spec)
    assert [(c.field, c.value) for c in choices] == [("spec.method", "tflite-int8"), ("artifact input/output", "uint8")]
    notes = target_notes(spec)
    assert "not on the target" in notes[0] and any("edgetpu_compiler" in n and "not run" in n for n in notes)


def test_what_the_spec_writes_wins() -> None:
    spec = _spec(
        target="x86-avx2",
        model=ONNX_MODEL,
        method="onnx-dynamic",
        onnx={"reduceRange": "never", "activationType": "uint8"},
    )
    resolved, choices = resolve_target(spec)
    assert resolved.method is api.Method.ONNX_DYNAMIC and resolved.onnx.reduce_range is api.ReduceRange.NEVER
    assert [c.field for c in choices] == ["spec.onnx.weightType"]


def test_the_target_isa_not_the_workers_cpu_decides_reduce_range() -> None:
    avx2, _ = resolve_target(_spec(target="x86-avx2", model=ONNX_MODEL))
    vnni, _ = resolve_target(_spec(target="x86-vnni", model=ONNX_MODEL))
    arm, _ = resolve_target(_spec(target="arm64-cpu", model=ONNX_MODEL))
    assert avx2.onnx.reduce_range is api.ReduceRange.ALWAYS
    assert vnni.onnx.reduce_range is api.ReduceRange.NEVER and arm.onnx.reduce_range is api.ReduceRange.NEVER
    assert avx2.onnx.activation_type is api.OnnxQuantType.UINT8 and avx2.onnx.weight_type is api.OnnxQuantType.INT8
    # TFLite methods do not read spec.onnx: nothing chosen there
    _tfl, choices = resolve_target(_spec(target="x86-avx2"))
    assert not [c for c in choices if c.field.startswith("spec.onnx")]


def test_rpi_and_jetson_fall_back_on_a_missed_budget_unless_the_spec_says_otherwise() -> None:
    rpi, choices = resolve_target(_spec(target="rpi-xnnpack"))
    assert rpi.acceptance.on_failure is api.OnFailure.DEGRADE and "spec.acceptance.onFailure" in [
        c.field for c in choices
    ]
    kept, choices = resolve_target(
        _spec(target="rpi-xnnpack", acceptance={"onFailure": "fail", "maxAccuracyDrop": 0.02})
    )
    assert kept.acceptance.on_failure is api.OnFailure.FAIL and kept.acceptance.max_accuracy_drop == 0.02
    assert "spec.acceptance.onFailure" not in [c.field for c in choices]
    coral, _ = resolve_target(_spec(target="coral-edgetpu"))
    assert coral.acceptance.on_failure is api.OnFailure.FAIL  # float16 does not run on the Edge TPU


def test_resolution_is_idempotent_and_no_target_changes_nothing() -> None:
    resolved, choices = resolve_target(_spec(target="x86-avx2", model=ONNX_MODEL))
    assert choices and resolve_target(resolved) == (resolved, [])
    plain = _spec(method="tflite-int8")
    assert resolve_target(plain) == (plain, [])


def test_the_rendered_job_keeps_what_the_spec_left_out_for_the_worker() -> None:
    spec = _spec(target="coral-edgetpu")
    doc = render.worker_document(owner=render.Owner(name="j", namespace="n", uid="u", generation=1), spec=spec)
    wire = json.loads(json.dumps(doc))["spec"]
    assert "method" not in wire and wire["target"] == "coral-edgetpu" and "onnx" not in wire
    again = api.QuantizationJob.model_validate(doc).spec
    assert again == spec and "method" not in again.model_fields_set
    _r, choices = resolve_target(again)
    assert choices[0].field == "spec.method"


def test_the_api_server_defaults_nothing_a_target_may_fill() -> None:
    """A stored object must still show what the manifest left out, or the target could not fill it in the cluster."""
    from edgequant.api import crd
    from edgequant.api.targets import FILLABLE_FIELDS

    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "method" not in spec["required"]
    for path in FILLABLE_FIELDS:
        node = spec
        for key in path.split(".")[1:]:
            node = node["properties"][key]
        assert "default" not in node, path
