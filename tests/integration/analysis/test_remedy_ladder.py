"""acceptance.onFailure remedy in the real worker: plain INT8 misses the budget, more calibration samples cannot help
(the damage is in two layers' weight scales, by construction), pinning both fragile layers passes, and the status
names that rung."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgequant.api.exitcodes import ExitCode

pytestmark = pytest.mark.integration

#: Far below what one unpinned fragile layer costs (tens of points), far above what 8-bit elsewhere costs.
BUDGET = 0.05


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: Any, doubly_sensitive_cnn: Path) -> Path:
    import shutil

    from edgequant.data.export import write_npz

    root = tmp_path_factory.mktemp("remedy")
    write_npz(
        root / "cal.npz",
        fashion_mnist.train_x[20_000:20_500],
        fashion_mnist.train_y[20_000:20_500],
        classes=fashion_mnist.classes,
    )
    write_npz(
        root / "eval.npz", fashion_mnist.test_x[:1000], fashion_mnist.test_y[:1000], classes=fashion_mnist.classes
    )
    shutil.copy(doubly_sensitive_cnn, root / "doubly-sensitive.keras")
    return root


def test_remedy_walks_more_samples_then_pinning_and_status_names_the_rung_that_passed(root: Path) -> None:
    import yaml

    from edgequant.cli import main as cli
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    doc = {
        "model": {
            "uri": f"file://{root}/doubly-sensitive.keras",
            "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"},
        },
        "method": "tflite-int8",
        "calibration": {
            "dataset": {"uri": f"file://{root}/cal.npz", "layout": "npz"},
            "samples": 100,
            "minSamples": 50,
        },
        "evaluation": {"dataset": {"uri": f"file://{root}/eval.npz", "layout": "npz"}, "samples": 1000},
        "acceptance": {"maxAccuracyDrop": BUDGET, "onFailure": "remedy"},
        "mixedPrecision": {"maxPinnedLayers": 3},
        "output": {"uri": f"file://{root}/out/"},
        "ptq": {
            "adaptiveRounding": "off"
        },  # the fragile layers defeat round-to-nearest; adaptive rounding repairs them
    }
    spec, _name, _ns = spec_from_document(doc)
    result, _ctx = run_job(spec, workdir=root / "work", progress=SilentProgress())
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((root / "out" / "report.json").read_text())
    gate = report["analysis"]["gate"]
    trials = gate["trials"]
    rungs = [t["rung"] for t in trials]
    assert rungs[:2] == ["full", "more-samples"] and set(rungs[2:]) == {"pinned"}, rungs
    assert trials[1]["changes"] == {"spec.calibration.samples": "500"}
    # plain INT8 and more samples both miss by far: the fragile weight scales do not depend on the calibration data
    assert all(t["accuracyDrop"] > 2 * BUDGET for t in trials[:2]), trials
    passed = [t for t in trials if t["passed"]]
    assert len(passed) == 1 and passed[0] is trials[-1] and passed[0]["chosen"]
    assert {"conv2", "conv3"} <= set(passed[0]["pinned"])
    assert gate["rung"] == "pinned" and gate["passed"]
    assert any(s.startswith("calibration-algorithm: tflite-int8 calibrates with min/max only") for s in gate["skipped"])
    assert any(s.startswith("qat: tflite-qat needs training data") for s in gate["skipped"])
    # what the operator puts in status: the rung, and a message naming it
    assert result.results.rung == "pinned" and "remedy rung pinned passed" in result.message
    assert not result.results.degraded and not report["outcome"]["degraded"]  # a remedy that passes is the fix
    assert result.results.pinned_layers == passed[0]["pinned"]
    html = (root / "out" / "report.html").read_text()
    assert "more-samples" in html and "spec.calibration.samples" in html

    # GitOps: the layers that passed go into the job's manifest, the rest of it untouched
    manifest = root / "job.yaml"
    manifest.write_text(
        "# reviewed\napiVersion: edgequant.io/v1alpha1\nkind: QuantizationJob\nmetadata: {name: fmnist}\nspec: "
        + json.dumps(doc)
        + "\n"
    )
    report_path = str(root / "out" / "report.json")
    assert cli.main(["pin", report_path, str(manifest), "--check"]) == 1
    assert cli.main(["pin", report_path, str(manifest)]) == 0
    pinned = manifest.read_text()
    assert pinned.startswith("# reviewed\n")
    again, _name, _ns = spec_from_document(yaml.safe_load(pinned))
    assert (
        again.mixed_precision.mode.value == "manual"
        and list(again.mixed_precision.pinned_layers) == passed[0]["pinned"]
    )
    assert cli.main(["pin", report_path, str(manifest), "--check"]) == 0


def test_remedy_tries_qat_with_training_data_before_float16(root: Path, fashion_mnist: Any) -> None:
    """One pin allowed, training data given: full -> pinned -> qat -> float16. QAT cannot mend the fragile layers by
    construction (their outlier weights read a dead channel, so they get no gradient), float16 keeps FP32's accuracy."""
    from edgequant.data.export import write_npz
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    write_npz(
        root / "train.npz", fashion_mnist.train_x[:2000], fashion_mnist.train_y[:2000], classes=fashion_mnist.classes
    )
    doc = {
        "model": {
            "uri": f"file://{root}/doubly-sensitive.keras",
            "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"},
        },
        "method": "tflite-int8",
        "calibration": {"dataset": {"uri": f"file://{root}/cal.npz", "layout": "npz"}, "samples": 500},
        "training": {
            "dataset": {"uri": f"file://{root}/train.npz", "layout": "npz"},
            "epochs": 1,
            "batchSize": 64,
            "maxSamples": 2000,
        },
        "evaluation": {"dataset": {"uri": f"file://{root}/eval.npz", "layout": "npz"}, "samples": 1000},
        "acceptance": {"maxAccuracyDrop": BUDGET, "onFailure": "remedy"},
        "mixedPrecision": {"maxPinnedLayers": 1},
        "output": {"uri": f"file://{root}/out-qat/"},
        "ptq": {
            "adaptiveRounding": "off"
        },  # the fragile layers defeat round-to-nearest; adaptive rounding repairs them
    }
    spec, _name, _ns = spec_from_document(doc)
    result, _ctx = run_job(spec, workdir=root / "work-qat", progress=SilentProgress())
    assert result.exit_code == ExitCode.SUCCESS, result.message
    gate = json.loads((root / "out-qat" / "report.json").read_text())["analysis"]["gate"]
    trials = gate["trials"]
    assert [t["rung"] for t in trials] == ["full", "pinned", "qat", "float16"], [t["rung"] for t in trials]
    assert trials[2]["method"] == "tflite-qat" and trials[2]["changes"] == {"spec.method": "tflite-qat"}
    assert all(t["accuracyDrop"] > 2 * BUDGET for t in trials[:3]), trials
    assert trials[3]["passed"] and trials[3]["chosen"] and gate["rung"] == "float16"
    assert any(s.startswith("more-samples: calibration already uses 500") for s in gate["skipped"])
    assert (
        result.results.rung == "float16" and result.results.method.value == "tflite-float16" and result.results.degraded
    )
