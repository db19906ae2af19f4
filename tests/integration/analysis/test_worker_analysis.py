"""The analysis stages inside the real worker pipeline: file:// data, a real TFLite model, report.json + report.html."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgequant.api.exitcodes import ExitCode

pytestmark = pytest.mark.integration

#: Degrade-ladder budget for the doubly sensitive CNN: far below what an unpinned fragile layer costs, far above float16's drift.
DEGRADE_BUDGET = 0.05
#: float16 weights move top-1 on 1000 images by a handful of samples at most.
FLOAT16_MAX_DRIFT = 0.005


@pytest.fixture(scope="module")
def job_files(
    tmp_path_factory: pytest.TempPathFactory,
    fashion_mnist: Any,
    sensitive_cnn: Path,
    doubly_sensitive_cnn: Path,
    healthy_cnn: Path,
    onnx_cnn: Any,
    rescaling_cnn: Path,
) -> Path:
    from PIL import Image

    from edgequant.data.export import write_npz

    root = tmp_path_factory.mktemp("jobs")
    write_npz(
        root / "cal.npz",
        fashion_mnist.train_x[20_000:20_500],
        fashion_mnist.train_y[20_000:20_500],
        classes=fashion_mnist.classes,
    )
    write_npz(
        root / "eval.npz", fashion_mnist.test_x[:1000], fashion_mnist.test_y[:1000], classes=fashion_mnist.classes
    )
    # The same evaluation images without labels: an npz with x only, and a folder with the images directly in it.
    write_npz(root / "eval-unlabeled.npz", fashion_mnist.test_x[:1000], None)
    (root / "photos").mkdir()
    for i, image in enumerate(fashion_mnist.test_x[:300]):
        Image.fromarray(image).save(root / "photos" / f"{i:04d}.png")
    # Labels shifted by five classes: clothes become footwear and back (t-shirt -> sandal, sneaker -> pullover,
    # trouser -> shirt, bag -> dress): confusions no trained classifier makes, so FP32 scores far below chance.
    write_npz(root / "eval-shifted.npz", fashion_mnist.test_x[:1000], (fashion_mnist.test_y[:1000] + 5) % 10)
    shutil.copy(sensitive_cnn, root / "sensitive.keras")
    shutil.copy(healthy_cnn, root / "healthy.keras")
    shutil.copy(rescaling_cnn, root / "rescaling.keras")
    shutil.copy(onnx_cnn("sensitive"), root / "sensitive.onnx")
    shutil.copy(doubly_sensitive_cnn, root / "doubly-sensitive.keras")
    shutil.copy(onnx_cnn("doubly-sensitive"), root / "doubly-sensitive.onnx")
    return root


def _run(
    root: Path,
    out: str,
    *,
    model: str = "sensitive.keras",
    progress: Any = None,
    scaling: dict[str, Any] | None = None,
    **spec: Any,
) -> tuple[Any, Any, Path]:
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    onnx = model.endswith(".onnx")
    shape = {"shape": [1, 28, 28], "layout": "NCHW"} if onnx else {"shape": [28, 28, 1]}
    doc: dict[str, Any] = {
        "model": {
            "uri": f"file://{root}/{model}",
            "input": {**shape, "colorOrder": "GRAY", **({"scaling": scaling} if scaling else {})},
        },
        "method": "tflite-int8",
        "calibration": {"dataset": {"uri": f"file://{root}/cal.npz", "layout": "npz"}, "samples": 500},
        "evaluation": {"dataset": {"uri": f"file://{root}/eval.npz", "layout": "npz"}, "samples": 1000},
        "output": {"uri": f"file://{root}/{out}/"},
        # the fragile layers are built to defeat round-to-nearest weights; adaptive rounding repairs them (tested below)
        "ptq": {"adaptiveRounding": "off"},
    }
    doc.update(spec)
    parsed, _name, _ns = spec_from_document(doc)
    result, ctx = run_job(parsed, workdir=root / f"work-{out}", progress=progress or SilentProgress())
    return result, ctx, root / out


def test_auto_mixed_precision_pins_the_sensitive_layer_and_publishes_both_reports(job_files: Path) -> None:
    result, _ctx, out = _run(
        job_files,
        "auto",
        mixedPrecision={"mode": "auto", "sensitivity": "exhaustive"},
        acceptance={"maxAccuracyDrop": 0.02},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((out / "report.json").read_text())
    analysis = report["analysis"]
    sens = analysis["sensitivity"]
    assert (
        sens["mode"] == "exhaustive" and sens["layers"][0]["layer"] == "conv2" and sens["fast"][0]["layer"] == "conv2"
    )
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


def test_adaptive_rounding_repairs_the_fragile_layer_that_round_to_nearest_loses(job_files: Path) -> None:
    """conv2's blown-up weight scale leaves its live weights one or two grid steps: round-to-nearest loses the layer
    (the test below fails the gate with the same budget), rounding against conv2's input patches keeps its output."""
    result, _ctx, out = _run(
        job_files,
        "rounded",
        acceptance={"maxAccuracyDrop": 0.02, "onFailure": "fail"},
        ptq={"adaptiveRounding": "auto"},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((out / "report.json").read_text())
    assert [t["rung"] for t in report["analysis"]["gate"]["trials"]] == ["full"]
    assert any("chosen: adaptive rounding" in n for n in report["notes"]), report["notes"]


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
    assert "output-mismatch" in fired and fired["output-mismatch"]["fixes"][0].startswith(
        "use more diverse calibration data: 500 samples is already within"
    )
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
    result, _ctx, out = _run(
        job_files,
        "manual",
        mixedPrecision={"mode": "manual", "pinnedLayers": ["conv2"]},
        acceptance={"maxAccuracyDrop": 0.02},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    assert result.results.pinned_layers == ["conv2"] and not result.results.degraded
    trials = json.loads((out / "report.json").read_text())["analysis"]["gate"]["trials"]
    assert [(t["rung"], t["pinned"]) for t in trials] == [("pinned", ["conv2"])]
    bad, _ctx, _out = _run(job_files, "manual-bad", mixedPrecision={"mode": "manual", "pinnedLayers": ["conv_2"]})
    assert bad.exit_code == ExitCode.INVALID_INPUT
    assert "conv_2" in bad.message and "quantizable layers are ['conv1', 'pool1', 'conv2'" in bad.message


def test_degrade_reaches_float16_when_pinning_cannot_meet_the_budget(job_files: Path) -> None:
    """Two fragile layers and one pin allowed: full and pinned INT8 both lose tens of points, float16 keeps FP32's accuracy.

    The budget (5 points) sits far from both sides: the 8-bit layer left unpinned scores near chance, and float16
    moves top-1 by at most a few samples of 1000, whatever the CPU.
    """
    result, _ctx, out = _run(
        job_files,
        "float16",
        model="doubly-sensitive.keras",
        mixedPrecision={"maxPinnedLayers": 1},
        acceptance={"maxAccuracyDrop": DEGRADE_BUDGET, "onFailure": "degrade"},
    )
    assert result.exit_code == ExitCode.SUCCESS and result.results.degraded
    report = json.loads((out / "report.json").read_text())
    trials = report["analysis"]["gate"]["trials"]
    assert [t["rung"] for t in trials] == ["full", "pinned", "float16"]
    assert all(t["accuracyDrop"] > 2 * DEGRADE_BUDGET for t in trials[:2]), trials
    chosen = [t for t in trials if t["chosen"]]
    assert (
        len(chosen) == 1 and chosen[0]["method"] == "tflite-float16" and report["publishedMethod"] == "tflite-float16"
    )
    assert abs(chosen[0]["accuracyDrop"]) <= FLOAT16_MAX_DRIFT
    assert result.results.method.value == "tflite-float16"


def test_onnx_static_auto_mixed_precision_pins_the_sensitive_node(job_files: Path) -> None:
    result, _ctx, out = _run(
        job_files,
        "onnx-auto",
        model="sensitive.onnx",
        method="onnx-static",
        mixedPrecision={"mode": "auto", "sensitivity": "exhaustive"},
        acceptance={"maxAccuracyDrop": 0.02},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    analysis = json.loads((out / "report.json").read_text())["analysis"]
    assert (
        analysis["sensitivity"]["layers"][0]["layer"] == "conv2"
        and analysis["sensitivity"]["fast"][0]["layer"] == "conv2"
    )
    assert [t["rung"] for t in analysis["gate"]["trials"]] == ["full", "pinned"]
    assert result.results.pinned_layers == ["conv2"] and result.results.accuracy_drop <= 0.02


def test_onnx_degrade_ends_with_the_model_converted_to_float16(job_files: Path) -> None:
    """ONNX Runtime has no float16 method: the last rung is the source model converted to float16, float32 I/O."""
    import onnx

    result, _ctx, out = _run(
        job_files,
        "onnx-float16",
        model="doubly-sensitive.onnx",
        method="onnx-static",
        mixedPrecision={"maxPinnedLayers": 1},
        acceptance={"maxAccuracyDrop": DEGRADE_BUDGET, "onFailure": "degrade"},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((out / "report.json").read_text())
    trials = report["analysis"]["gate"]["trials"]
    assert [(t["rung"], t["method"]) for t in trials] == [
        ("full", "onnx-static"),
        ("pinned", "onnx-static"),
        ("float16", "onnx-static"),
    ]
    assert all(t["accuracyDrop"] > 2 * DEGRADE_BUDGET for t in trials[:2]), trials
    float16 = trials[-1]
    assert float16["chosen"] and abs(float16["accuracyDrop"]) <= FLOAT16_MAX_DRIFT  # float16 keeps FP32's accuracy
    assert result.results.degraded and 1.8 <= float16["compressionRatio"] <= 2.2  # half the bytes of FP32
    artifact = next(out.glob("*.float16.onnx"))
    model = onnx.load(str(artifact))
    assert {init.data_type for init in model.graph.initializer if len(init.dims) > 1} == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # the input contract is unchanged
    assert any("float16 rung" in note for note in report["notes"])


# --------------------------------------------------------------------------- fidelity budgets (agreement, SQNR)


def _evaluation(root: Path, name: str, **extra: Any) -> dict[str, Any]:
    layout = "npz" if name.endswith(".npz") else "imagefolder"
    return {"dataset": {"uri": f"file://{root}/{name}" + ("" if layout == "npz" else "/"), "layout": layout}, **extra}


def test_unlabeled_folder_passes_min_agreement_with_accuracy_na(job_files: Path) -> None:
    """tflite-float16 of the healthy CNN: float16 weights move logits by ~1e-3 of their size, so at most a near-tie
    flips; 0.98 leaves six near-ties in 300 to spare. Accuracy is n/a, the default maxAccuracyDrop is not applied."""
    result, _ctx, out = _run(
        job_files,
        "unlabeled-pass",
        model="healthy.keras",
        method="tflite-float16",
        evaluation=_evaluation(job_files, "photos", samples=300),
        acceptance={"minAgreement": 0.98},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    res = result.results
    assert res.baseline.accuracy is None and res.quantized.accuracy is None and res.accuracy_drop is None
    assert res.agreement is not None and res.agreement >= 0.98 and res.sqnr_db is not None and res.sqnr_db > 40
    report = json.loads((out / "report.json").read_text())
    gate = report["gate"]
    assert gate["passed"] and gate["minAgreement"] == 0.98 and gate["accuracyBudgetApplied"] is False
    assert report["comparison"]["accuracyDrop"] is None and report["comparison"]["agreement"] == res.agreement
    evaluation = next(d for d in report["datasets"] if d["role"] == "evaluation")
    assert evaluation["labeled"] is False and evaluation["used"] == 300 and evaluation["classCounts"] == {}
    assert any("accuracy n/a" in n and "maxAccuracyDrop was not applied" in n for n in report["notes"])
    assert "accuracy n/a" in result.message


def test_unlabeled_npz_fails_min_agreement_on_the_sensitive_cnn(job_files: Path) -> None:
    """Full INT8 of the sensitive CNN: conv2's 8-bit weights keep almost no resolution, so its outputs collapse and
    most classes flip; 0.95 is far above that and far below what a working INT8 model agrees."""
    result, _ctx, out = _run(
        job_files,
        "unlabeled-fail",
        evaluation=_evaluation(job_files, "eval-unlabeled.npz", samples=1000),
        acceptance={"minAgreement": 0.95, "onFailure": "fail"},
    )
    assert result.exit_code == ExitCode.ACCEPTANCE_FAILED
    assert "acceptance.minAgreement 0.9500" in result.message
    report = json.loads((out / "report.json").read_text())
    gate = report["analysis"]["gate"]
    assert not gate["passed"] and gate["agreement"] < 0.95 and gate["accuracyDrop"] is None
    assert [t["rung"] for t in gate["trials"]] == ["full"]  # onFailure fail, mode off: no ladder
    assert report["baseline"]["accuracy"] is None and report["baseline"]["evaluatedSamples"] == 1000


def test_degrade_ladder_driven_by_agreement_reaches_float16(job_files: Path) -> None:
    """Two broken layers (conv2, conv3) and at most one pinned: the pinned rung keeps one broken INT8 layer, so its
    outputs collapse like full INT8's; only float16 can agree with FP32 on 9 in 10 samples, and it agrees on nearly all."""
    result, _ctx, out = _run(
        job_files,
        "agree-ladder",
        model="doubly-sensitive.keras",
        evaluation=_evaluation(job_files, "eval-unlabeled.npz", samples=1000),
        mixedPrecision={"maxPinnedLayers": 1},
        acceptance={"minAgreement": 0.9, "onFailure": "degrade"},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((out / "report.json").read_text())
    trials = report["analysis"]["gate"]["trials"]
    assert [t["rung"] for t in trials] == ["full", "pinned", "float16"]
    full, pinned, float16 = trials
    assert full["agreement"] < 0.9 and pinned["agreement"] < 0.9 and len(pinned["pinned"]) == 1
    assert (
        float16["chosen"]
        and float16["passed"]
        and float16["agreement"] >= 0.9
        and float16["method"] == "tflite-float16"
    )
    assert float16["sqnrDb"] > full["sqnrDb"] and all(t["accuracy"] is None for t in trials)
    assert result.results.degraded and result.results.method.value == "tflite-float16"
    assert result.results.agreement == float16["agreement"]


def test_labels_that_are_not_the_models_classes_are_a_finding(job_files: Path) -> None:
    result, _ctx, out = _run(
        job_files,
        "shifted",
        model="healthy.keras",
        evaluation=_evaluation(job_files, "eval-shifted.npz", samples=1000),
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((out / "report.json").read_text())
    finding = next(f for f in report["findings"] if f["code"] == "labels-do-not-match-model")
    assert finding["severity"] == "warning" and finding["dataset"] == "evaluation"
    assert (
        "labels do not match the model's classes" in finding["message"]
        and "acceptance.minAgreement" in finding["message"]
    )
    assert report["baseline"]["accuracy"] < 0.1  # below chance (1/10): clothes labelled as footwear and back
    assert any("labels do not match" in w for w in result.results.warnings)
    # the same model and images with their true labels: no finding
    _good, good_ctx, _out = _run(job_files, "true-labels", model="healthy.keras", mixedPrecision={"sensitivity": "off"})
    assert not any(f.code == "labels-do-not-match-model" for f in good_ctx.findings)


def test_accuracy_budget_on_unlabeled_data_is_refused_naming_the_fix(job_files: Path) -> None:
    result, _ctx, _out = _run(
        job_files,
        "unlabeled-drop",
        evaluation=_evaluation(job_files, "eval-unlabeled.npz"),
        acceptance={"maxAccuracyDrop": 0.02},
    )
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "spec.acceptance.maxAccuracyDrop 0.02 needs labeled evaluation data" in result.message
    assert "acceptance.minAgreement" in result.message


def test_auto_mixed_precision_on_unlabeled_data_pins_until_agreement_is_met(job_files: Path) -> None:
    """Keeping conv2 in float leaves the healthy CNN's INT8 (agreement ~0.99, output SQNR ~39 dB: only near-ties flip),
    far above 0.9; with conv2 in INT8 the outputs collapse (agreement ~0.2)."""
    result, _ctx, out = _run(
        job_files,
        "unlabeled-auto",
        evaluation=_evaluation(job_files, "eval-unlabeled.npz", samples=1000),
        mixedPrecision={"mode": "auto", "sensitivity": "exhaustive"},
        acceptance={"minAgreement": 0.9},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((out / "report.json").read_text())
    analysis = report["analysis"]
    # without labels, exhaustive sensitivity scores each layer by agreement with FP32 (which agrees with itself: 1.0)
    sens = analysis["sensitivity"]
    assert sens["mode"] == "exhaustive" and sens["referenceAccuracy"] == 1.0 and sens["layers"][0]["layer"] == "conv2"
    assert sens["layers"][0]["accuracy"] < 0.9 and any("agreement with FP32" in n for n in report["notes"])
    trials = analysis["gate"]["trials"]
    assert trials[0]["rung"] == "full" and trials[0]["agreement"] < 0.9 and not trials[0]["passed"]
    assert trials[-1]["chosen"] and trials[-1]["agreement"] >= 0.9 and "conv2" in trials[-1]["pinned"]
    assert analysis["mixedPrecision"]["metAccuracyBudget"] is True and not result.results.degraded
    assert "conv2" in result.results.pinned_layers and result.results.accuracy_drop is None


def test_sqnr_budget_above_what_8_bit_outputs_can_carry_degrades_to_float16(job_files: Path) -> None:
    """Full-integer TFLite emits int8 logits: 8 bits carry at most ~50 dB (6.02 x 8 + 1.76) and the healthy CNN's
    chained INT8 layers give less; float16 weights (11-bit significand) keep outputs ~70 dB from FP32. 55 dB
    separates them on any CPU, so the ladder must end at float16, whatever layer the pinned rung keeps."""
    result, _ctx, out = _run(
        job_files,
        "sqnr-ladder",
        model="healthy.keras",
        mixedPrecision={"maxPinnedLayers": 1},
        acceptance={"minSqnrDb": 55, "onFailure": "degrade"},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((out / "report.json").read_text())
    trials = report["analysis"]["gate"]["trials"]
    assert [t["rung"] for t in trials] == ["full", "pinned", "float16"]
    assert all(t["sqnrDb"] < 55 and "acceptance.minSqnrDb 55.0 dB" in t["reasons"][0] for t in trials[:2])
    assert trials[2]["chosen"] and trials[2]["sqnrDb"] >= 55 and result.results.sqnr_db == trials[2]["sqnrDb"]
    # labeled data: the default accuracy budget applied too, and float16 met it
    assert report["gate"]["accuracyBudgetApplied"] is True and report["gate"]["minSqnrDb"] == 55
    # one gate model: the top-level key and the analysis section carry the same verdict
    assert report["gate"] == report["analysis"]["gate"]


def test_onnx_static_auto_on_unlabeled_data_pins_until_agreement_is_met(job_files: Path) -> None:
    """The same construction through ONNX Runtime: conv2 in INT8 collapses the outputs, conv2 in float agrees."""
    result, _ctx, out = _run(
        job_files,
        "onnx-unlabeled-auto",
        model="sensitive.onnx",
        method="onnx-static",
        evaluation=_evaluation(job_files, "eval-unlabeled.npz", samples=1000),
        mixedPrecision={"mode": "auto"},
        acceptance={"minAgreement": 0.9},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    trials = json.loads((out / "report.json").read_text())["analysis"]["gate"]["trials"]
    assert trials[0]["agreement"] < 0.9 and not trials[0]["passed"] and trials[0]["accuracy"] is None
    assert trials[-1]["chosen"] and trials[-1]["agreement"] >= 0.9 and "conv2" in trials[-1]["pinned"]
    assert result.results.agreement == trials[-1]["agreement"] and result.results.sqnr_db == trials[-1]["sqnrDb"]


# --------------------------------------------------------------------------- diagnostics


class StageProgress:
    """Silent progress that remembers which stage runs, so model calls can be counted per stage."""

    stage = ""

    def stage_started(self, *, index: int, total: int, name: str, title: str) -> None:
        self.stage = name

    def stage_finished(self, *, name: str, seconds: float, ok: bool) -> None:
        self.stage = ""

    def log(self, message: str) -> None:
        pass

    def advance(self, *, task: str, done: int, total: int) -> None:
        pass


def test_diagnose_reads_the_evaluations_outputs_and_runs_no_model(
    job_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgequant.backends.tflite.predictor import TFLitePredictor

    progress = StageProgress()
    calls: dict[str, int] = {}
    predict = TFLitePredictor.predict

    def counted(self: Any, batch: Any) -> Any:
        calls[progress.stage] = calls.get(progress.stage, 0) + 1
        return predict(self, batch)

    monkeypatch.setattr(TFLitePredictor, "predict", counted)
    result, _ctx, out = _run(
        job_files, "counted", model="healthy.keras", progress=progress, mixedPrecision={"sensitivity": "off"}
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    assert calls.get("baseline", 0) > 0 and calls.get("evaluate", 0) > 0
    assert calls.get("diagnose", 0) == 0, calls
    diagnostics = json.loads((out / "report.json").read_text())["analysis"]["diagnostics"]
    assert diagnostics["outputs"]["samples"] == 512  # the FP32 and quantized outputs the evaluations kept
    checks = [f["check"] for f in diagnostics["findings"]]
    assert checks.count("preprocessing-mismatch") == 2 and "input-range" in checks
    assert not any(f["fired"] for f in diagnostics["findings"]), diagnostics["findings"]


def test_a_model_that_rescales_inside_fed_1_over_255_fails_whatever_on_failure_says(job_files: Path) -> None:
    """Rescaling(1/255) in the model and the default scale 1/255: inputs divided twice. The artifact would score
    like FP32 (no accuracy drop) and still be wrong, so the gate fails even with onFailure degrade."""
    result, ctx, out = _run(
        job_files,
        "rescaling",
        model="rescaling.keras",
        acceptance={"maxAccuracyDrop": 0.02, "onFailure": "degrade"},
    )
    assert result.exit_code == ExitCode.ACCEPTANCE_FAILED, result.message
    assert "preprocessing mismatch" in result.message and "spec.model.input.scaling" in result.message
    assert "scale 1 (0-255 pixel values)" in result.message  # the scaling that scored better
    report = json.loads((out / "report.json").read_text())
    assert report["outcome"]["reason"] == "AcceptanceFailed"
    gate = report["analysis"]["gate"]
    assert not gate["passed"] and "preprocessing mismatch" in gate["reasons"][0] and gate["onFailure"] == "degrade"
    assert [t["rung"] for t in gate["trials"]] == ["full"]  # no ladder: no artifact can be right
    fired = {f["check"]: f for f in report["analysis"]["diagnostics"]["findings"] if f["fired"]}
    mismatch = fired["preprocessing-mismatch"]
    assert mismatch["evidence"]["alternativeAccuracy"] > mismatch["evidence"]["accuracy"] + 0.3
    assert "artifact" not in ctx.uploads
    assert not any(
        f["code"] == "labels-do-not-match-model" for f in report["findings"]
    )  # the inputs are wrong, not the labels
    # the same model fed what it was trained on publishes, with no mismatch found
    fixed, _ctx, fixed_out = _run(
        job_files,
        "rescaling-fixed",
        model="rescaling.keras",
        scaling={"scale": 1.0},
        acceptance={"maxAccuracyDrop": 0.02},
    )
    assert fixed.exit_code == ExitCode.SUCCESS, fixed.message
    findings = json.loads((fixed_out / "report.json").read_text())["analysis"]["diagnostics"]["findings"]
    assert not any(f["fired"] for f in findings if f["check"] == "preprocessing-mismatch")
    assert fixed.results.baseline.accuracy > mismatch["evidence"]["accuracy"] + 0.3


@pytest.mark.parametrize(("model", "method"), [("sensitive.keras", "tflite-int8"), ("sensitive.onnx", "onnx-static")])
def test_one_calibration_serves_quantize_sensitivity_and_the_pinned_candidate(
    job_files: Path, model: str, method: str
) -> None:
    result, ctx, out = _run(
        job_files,
        f"once-{method}",
        model=model,
        method=method,
        acceptance={"maxAccuracyDrop": 0.02, "onFailure": "degrade"},
    )
    assert result.exit_code == ExitCode.SUCCESS, result.message
    analysis = json.loads((out / "report.json").read_text())["analysis"]
    assert analysis["sensitivity"]["mode"] == "fast" and analysis["sensitivity"]["layers"][0]["layer"] == "conv2"
    assert [t["rung"] for t in analysis["gate"]["trials"]] == ["full", "pinned"]
    assert ctx.backend.calibrations == 1  # the quantize stage calibrated; the layer analysis and the ladder reused it
