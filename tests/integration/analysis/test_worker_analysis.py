"""The analysis stages inside the real worker pipeline: file:// data, a real TFLite model, report.json + report.html."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgequant.api.exitcodes import ExitCode

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def job_files(
    tmp_path_factory: pytest.TempPathFactory, fashion_mnist: Any, sensitive_cnn: Path, healthy_cnn: Path, onnx_cnn: Any
) -> Path:
    from edgequant.data.export import write_npz

    root = tmp_path_factory.mktemp("jobs")
    write_npz(root / "cal.npz", fashion_mnist.train_x[20_000:20_500], fashion_mnist.train_y[20_000:20_500], classes=fashion_mnist.classes)
    write_npz(root / "eval.npz", fashion_mnist.test_x[:1000], fashion_mnist.test_y[:1000], classes=fashion_mnist.classes)
    shutil.copy(sensitive_cnn, root / "sensitive.keras")
    shutil.copy(healthy_cnn, root / "healthy.keras")
    shutil.copy(onnx_cnn("sensitive"), root / "sensitive.onnx")
    return root


def _run(root: Path, out: str, *, model: str = "sensitive.keras", **spec: Any) -> tuple[Any, Any, Path]:
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    onnx = model.endswith(".onnx")
    shape = {"shape": [1, 28, 28], "layout": "NCHW"} if onnx else {"shape": [28, 28, 1]}
    doc: dict[str, Any] = {
        "model": {"uri": f"file://{root}/{model}", "input": {**shape, "colorOrder": "GRAY"}},
        "method": "tflite-int8",
        "calibration": {"dataset": {"uri": f"file://{root}/cal.npz", "layout": "npz"}, "samples": 500},
        "evaluation": {"dataset": {"uri": f"file://{root}/eval.npz", "layout": "npz"}, "samples": 1000},
        "output": {"uri": f"file://{root}/{out}/"},
    }
    doc.update(spec)
    parsed, _name, _ns = spec_from_document(doc)
    result, ctx = run_job(parsed, workdir=root / f"work-{out}", progress=SilentProgress())
    return result, ctx, root / out


def test_auto_mixed_precision_pins_the_sensitive_layer_and_publishes_both_reports(job_files: Path) -> None:
    result, _ctx, out = _run(
        job_files, "auto",
        mixedPrecision={"mode": "auto", "sensitivity": "exhaustive"}, acceptance={"maxAccuracyDrop": 0.02},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((out / "report.json").read_text())
    analysis = report["analysis"]
    sens = analysis["sensitivity"]
    assert sens["mode"] == "exhaustive" and sens["layers"][0]["layer"] == "conv2" and sens["fast"][0]["layer"] == "conv2"
    assert sens["agreement"]["topKOverlap"] >= 1 and sens["quantizeRuns"] == 7
    trials = analysis["gate"]["trials"]
    assert [t["rung"] for t in trials] == ["full", "pinned"]
    assert not trials[0]["passed"] and trials[1]["passed"] and trials[1]["chosen"] and trials[1]["pinned"] == ["conv2"]
    assert analysis["mixedPrecision"]["pinned"] == ["conv2"] and analysis["mixedPrecision"]["metAccuracyBudget"] is True
    assert result.results.pinned_layers == ["conv2"] and result.results.sensitive_layers[0] == "conv2"
    assert not result.results.degraded and result.results.accuracy_drop <= 0.02
    # the published artifact is the mixed one, with report.html beside it
    assert report["quantized"]["sizeBytes"] == (out / Path(report["artifact"]["uri"]).name).stat().st_size
    html = (out / "report.html").read_text()
    assert "conv2" in html and "<svg" in html and "<script" not in html
    assert {f["check"] for f in analysis["diagnostics"]["findings"] if f["fired"]} == set()


def test_gate_fail_path_exits_acceptance_failed_and_the_report_says_why(job_files: Path) -> None:
    result, ctx, out = _run(job_files, "fail", acceptance={"maxAccuracyDrop": 0.02, "onFailure": "fail"})
    assert result.exit_code == ExitCode.ACCEPTANCE_FAILED
    assert "acceptance.maxAccuracyDrop" in result.message
    report = json.loads((out / "report.json").read_text())
    assert report["outcome"]["reason"] == "AcceptanceFailed"
    gate = report["analysis"]["gate"]
    assert not gate["passed"] and "acceptance.maxAccuracyDrop" in gate["reasons"][0]
    # the fail path still diagnoses: the collapsed outputs of the unpinned model are named, with fixes
    fired = {f["check"]: f for f in report["analysis"]["diagnostics"]["findings"] if f["fired"]}
    assert "output-mismatch" in fired and fired["output-mismatch"]["fixes"][0].startswith("use more and more diverse calibration data")
    assert "artifact" not in ctx.uploads and (out / "report.html").is_file()


def test_degrade_path_falls_back_to_pinned_layers_and_flags_it(job_files: Path) -> None:
    result, _ctx, out = _run(job_files, "degrade", acceptance={"maxAccuracyDrop": 0.02, "onFailure": "degrade"})
    assert result.exit_code == ExitCode.SUCCESS
    assert result.results.degraded and result.results.pinned_layers == ["conv2"]
    report = json.loads((out / "report.json").read_text())
    assert report["outcome"]["degraded"] is True
    assert [t["rung"] for t in report["analysis"]["gate"]["trials"]] == ["full", "pinned"]
    assert report["analysis"]["sensitivity"]["mode"] == "fast"  # the ladder ranked layers with the default fast mode


def test_manual_pins_reach_the_tflite_backend_and_unknown_names_are_refused(job_files: Path) -> None:
    result, ctx, out = _run(
        job_files, "manual", mixedPrecision={"mode": "manual", "pinnedLayers": ["conv2"]}, acceptance={"maxAccuracyDrop": 0.02},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    assert result.results.pinned_layers == ["conv2"] and not result.results.degraded
    trials = json.loads((out / "report.json").read_text())["analysis"]["gate"]["trials"]
    assert [(t["rung"], t["pinned"]) for t in trials] == [("pinned", ["conv2"])]
    bad, _ctx, _out = _run(job_files, "manual-bad", mixedPrecision={"mode": "manual", "pinnedLayers": ["conv_2"]})
    assert bad.exit_code == ExitCode.INVALID_INPUT
    assert "conv_2" in bad.message and "quantizable layers are ['conv1', 'pool1', 'conv2'" in bad.message


def test_degrade_reaches_float16_when_pinning_cannot_meet_the_budget(job_files: Path) -> None:
    result, _ctx, out = _run(
        job_files, "float16", mixedPrecision={"maxPinnedLayers": 1}, acceptance={"maxAccuracyDrop": 0.0, "onFailure": "degrade"},
    )
    assert result.exit_code == ExitCode.SUCCESS and result.results.degraded
    report = json.loads((out / "report.json").read_text())
    trials = report["analysis"]["gate"]["trials"]
    assert [t["rung"] for t in trials] == ["full", "pinned", "float16"]
    chosen = [t for t in trials if t["chosen"]]
    assert len(chosen) == 1 and chosen[0]["method"] == "tflite-float16" and report["publishedMethod"] == "tflite-float16"
    assert result.results.method.value == "tflite-float16"


def test_onnx_static_auto_mixed_precision_pins_the_sensitive_node(job_files: Path) -> None:
    result, _ctx, out = _run(
        job_files, "onnx-auto", model="sensitive.onnx", method="onnx-static",
        mixedPrecision={"mode": "auto", "sensitivity": "exhaustive"}, acceptance={"maxAccuracyDrop": 0.02},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    analysis = json.loads((out / "report.json").read_text())["analysis"]
    assert analysis["sensitivity"]["layers"][0]["layer"] == "conv2" and analysis["sensitivity"]["fast"][0]["layer"] == "conv2"
    assert [t["rung"] for t in analysis["gate"]["trials"]] == ["full", "pinned"]
    assert result.results.pinned_layers == ["conv2"] and result.results.accuracy_drop <= 0.02


def test_onnx_degrade_ends_with_the_model_converted_to_float16(job_files: Path) -> None:
    """ONNX Runtime has no float16 method: the last rung is the source model converted to float16, float32 I/O."""
    import onnx

    result, _ctx, out = _run(
        job_files, "onnx-float16", model="sensitive.onnx", method="onnx-static",
        mixedPrecision={"maxPinnedLayers": 1}, acceptance={"maxAccuracyDrop": 0.0, "onFailure": "degrade"},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((out / "report.json").read_text())
    trials = report["analysis"]["gate"]["trials"]
    assert [(t["rung"], t["method"]) for t in trials] == [("full", "onnx-static"), ("pinned", "onnx-static"), ("float16", "onnx-static")]
    float16 = trials[-1]
    assert float16["chosen"] and abs(float16["accuracyDrop"]) <= 0.005  # float16 keeps FP32's accuracy
    assert result.results.degraded and 1.8 <= float16["compressionRatio"] <= 2.2  # half the bytes of FP32
    artifact = next(out.glob("*.float16.onnx"))
    model = onnx.load(str(artifact))
    assert {init.data_type for init in model.graph.initializer if len(init.dims) > 1} == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # the input contract is unchanged
    assert any("float16 rung" in note for note in report["notes"])


@pytest.mark.parametrize(("model", "method"), [("sensitive.keras", "tflite-int8"), ("sensitive.onnx", "onnx-static")])
def test_one_calibration_serves_quantize_sensitivity_and_the_pinned_candidate(job_files: Path, model: str, method: str) -> None:
    result, ctx, out = _run(
        job_files, f"once-{method}", model=model, method=method, acceptance={"maxAccuracyDrop": 0.02, "onFailure": "degrade"},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    analysis = json.loads((out / "report.json").read_text())["analysis"]
    assert analysis["sensitivity"]["mode"] == "fast" and analysis["sensitivity"]["layers"][0]["layer"] == "conv2"
    assert [t["rung"] for t in analysis["gate"]["trials"]] == ["full", "pinned"]
    assert ctx.backend.calibrations == 1  # the quantize stage calibrated; the layer analysis and the ladder reused it
