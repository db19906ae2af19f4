"""`edgequant pin`: a recommendation (report.json, or a sweep's status) written into a manifest, comments kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgequant.cli import main as cli
from edgequant.cli.pin import PinError, Recommendation, from_report, pin_text, recommendation_from

MANIFEST = """\
# Fashion-MNIST for the x86 fleet (reviewed by the ML team)
apiVersion: edgequant.io/v1alpha1
kind: QuantizationJob
metadata:
  name: fmnist
spec:
  target: x86-avx2   # the fleet's CPUs lack VNNI
  model:
    uri: s3://models/fmnist.onnx
    input: {shape: [1, 28, 28], layout: NCHW, colorOrder: GRAY}
  calibration:
    dataset:
      uri: "s3://data/cal/"
    samples: 200
  evaluation:
    dataset: {uri: s3://data/test/}
  acceptance:
    maxAccuracyDrop: 0.01   # one point
    onFailure: remedy
  output:
    uri: s3://out/fmnist/
"""


def _report(**over: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "kind": "QuantizationReport",
        "job": {"name": "fmnist"},
        "outcome": {"succeeded": True, "reason": "Succeeded", "message": "ok"},
        "method": "onnx-static",
        "publishedMethod": "onnx-static",
        "target": {
            "choices": [
                {"field": "spec.method", "value": "onnx-static", "reason": "r"},
                {"field": "spec.onnx.reduceRange", "value": "always", "reason": "r"},
                {"field": "artifact input/output", "value": "uint8", "reason": "r"},
            ]
        },
        "analysis": {
            "gate": {
                "trials": [
                    {"rung": "full", "chosen": False, "pinned": [], "changes": {}},
                    {
                        "rung": "calibration-algorithm",
                        "chosen": True,
                        "pinned": [],
                        "changes": {"spec.calibration.algorithm": "entropy", "spec.calibration.samples": "1000"},
                    },
                ]
            },
            "mixedPrecision": {"pinned": ["/conv2/Conv"]},
        },
    }
    report.update(over)
    return report


def test_a_report_recommends_its_published_method_the_values_chosen_for_it_and_its_pins() -> None:
    rec = from_report(_report())
    assert rec.method == "onnx-static" and rec.pinned_layers == ("/conv2/Conv",)
    assert rec.settings == {
        "spec.onnx.reduceRange": "always",
        "spec.calibration.algorithm": "entropy",
        "spec.calibration.samples": 1000,
    }


def test_pinning_writes_them_and_keeps_comments_quotes_and_flow_style() -> None:
    after = pin_text(MANIFEST, from_report(_report()))
    assert after.startswith("# Fashion-MNIST for the x86 fleet (reviewed by the ML team)\n")
    for kept in (
        "target: x86-avx2   # the fleet's CPUs lack VNNI",
        "input: {shape: [1, 28, 28], layout: NCHW, colorOrder: GRAY}",
        'uri: "s3://data/cal/"',
        "maxAccuracyDrop: 0.01   # one point",
        "dataset: {uri: s3://data/test/}",
    ):
        assert kept in after, kept
    assert "  method: onnx-static\n" in after and "    samples: 1000\n" in after and "    algorithm: entropy\n" in after
    assert "  onnx:\n    reduceRange: always\n" in after
    assert "  mixedPrecision:\n    mode: manual\n    pinnedLayers:\n    - /conv2/Conv\n" in after
    # pinning again changes nothing
    assert pin_text(after, from_report(_report())) == after


def test_a_recommendation_without_pins_turns_manual_pins_off() -> None:
    manual = MANIFEST + "  mixedPrecision:\n    mode: manual\n    pinnedLayers: [a, b]\n"
    after = pin_text(manual, Recommendation(method="onnx-static"))
    assert "pinnedLayers" not in after and "    mode: off\n" in after


def test_check_exits_1_while_the_manifest_differs_and_0_once_pinned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, manifest = tmp_path / "report.json", tmp_path / "job.yaml"
    report.write_text(json.dumps(_report()))
    manifest.write_text(MANIFEST)
    assert cli.main(["pin", str(report), str(manifest), "--check"]) == 1
    out = capsys.readouterr()
    assert "+  method: onnx-static" in out.out and "differs" in out.err
    assert manifest.read_text() == MANIFEST  # --check writes nothing
    assert cli.main(["pin", str(report), str(manifest)]) == 0
    assert "+    - /conv2/Conv" in capsys.readouterr().out
    assert cli.main(["pin", str(report), str(manifest), "--check"]) == 0
    assert "already pinned" in capsys.readouterr().out


def test_a_report_that_published_nothing_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report, manifest = tmp_path / "report.json", tmp_path / "job.yaml"
    report.write_text(
        json.dumps(_report(publishedMethod=None, outcome={"reason": "AcceptanceFailed", "message": "missed"}))
    )
    manifest.write_text(MANIFEST)
    assert cli.main(["pin", str(report), str(manifest)]) == 2
    assert "published no artifact (AcceptanceFailed" in capsys.readouterr().err


def test_a_pin_that_would_make_the_manifest_invalid_is_refused() -> None:
    # tflite-int8 does not take an ONNX model
    with pytest.raises(PinError, match="would not be valid.*model format"):
        pin_text(MANIFEST, Recommendation(method="tflite-int8"))


def test_a_sweep_status_plugs_in_per_target() -> None:
    status = {
        "recommended": [
            {
                "target": "x86-avx2",
                "method": "onnx-static",
                "options": {"spec.onnx.reduceRange": "always"},
                "pinnedLayers": [],
            },
            {"target": "rpi-xnnpack", "method": "tflite-int8", "pinnedLayers": ["conv2"]},
        ]
    }
    rec = recommendation_from({"kind": "QuantizationSweep", "status": status}, target="x86-avx2")
    assert (rec.method, rec.settings) == ("onnx-static", {"spec.onnx.reduceRange": "always"})
    assert recommendation_from(status, target="rpi-xnnpack").pinned_layers == ("conv2",)
    with pytest.raises(PinError, match="choose one with --target"):
        recommendation_from(status)
    assert recommendation_from({"recommended": {"jetson": {"method": "tensorrt-int8"}}}).method == "tensorrt-int8"
