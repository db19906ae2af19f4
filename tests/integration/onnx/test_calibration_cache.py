"""onnx-static's calibration cache through the worker on file:// storage: jobs that share a model, data and recipe
calibrate once, and the reused result quantizes to the very same artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgequant.api.exitcodes import ExitCode
from tests.integration.onnx.conftest import CONTRACT, CnnFiles

pytestmark = pytest.mark.integration

BARE_PTQ = {
    "crossLayerEqualization": "off",
    "biasCorrection": "off",
    "rangeSearch": "off",
    "sixteenBitWeights": "off",
    "adaptiveRounding": "off",
    "selectAlgorithm": False,
}


def run(
    root: Path, out: str, *, ptq: dict[str, Any] | None = None, **calibration: Any
) -> tuple[Any, dict[str, Any], Any]:
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    spec: dict[str, Any] = {
        "method": "onnx-static",
        "model": {"uri": f"file://{root}/cnn.onnx", "input": CONTRACT},
        "calibration": {
            "dataset": {"uri": f"file://{root}/train.npz", "layout": "npz"},
            "samples": 300,
            "cacheUri": f"file://{root}/cache/",
            **calibration,
        },
        "evaluation": {"dataset": {"uri": f"file://{root}/test.npz", "layout": "npz"}, "samples": 200},
        "mixedPrecision": {"sensitivity": "off"},
        "acceptance": {"maxAccuracyDrop": 0.05},
        "output": {"uri": f"file://{root}/{out}/"},
    }
    if ptq is not None:
        spec["ptq"] = ptq
    parsed, _, _ = spec_from_document(spec)
    result, ctx = run_job(parsed, workdir=root / f"work-{out}", progress=SilentProgress())
    assert result.exit_code == ExitCode.SUCCESS, result.message
    report = json.loads((root / out / "report.json").read_text())
    return result, report, ctx


def notes(report: dict[str, Any]) -> str:
    return json.dumps(report)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, fmnist_cnn: CnnFiles, fmnist_npz: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("calibration-cache")
    shutil.copy(fmnist_cnn.onnx, root / "cnn.onnx")
    shutil.copy(fmnist_npz["train"], root / "train.npz")
    shutil.copy(fmnist_npz["test"], root / "test.npz")
    return root


@pytest.mark.parametrize("ptq", [None, BARE_PTQ], ids=["ptq-auto", "bare-ranges"])
def test_the_second_job_reuses_the_first_jobs_calibration(root: Path, ptq: dict[str, Any] | None) -> None:
    tag = "auto" if ptq is None else "bare"
    first, first_report, first_ctx = run(root, f"{tag}-first", ptq=ptq)
    assert first_ctx.backend.calibrations == 1
    assert "stored for reuse" in notes(first_report)
    bundles = sorted(p.name for p in (root / "cache").iterdir())
    second, second_report, second_ctx = run(root, f"{tag}-second", ptq=ptq)
    assert second_ctx.backend.calibrations == 0  # no calibration pass: the stored result was used
    assert "reused from" in notes(second_report)
    assert sorted(p.name for p in (root / "cache").iterdir()) == bundles
    # The same ranges (and spec.ptq choices) quantize to the same bytes.
    assert second.results.artifact.sha256 == first.results.artifact.sha256
    assert second.results.accuracy_drop == first.results.accuracy_drop


def test_another_recipe_or_other_data_is_another_key(root: Path) -> None:
    run(root, "minmax", algorithm="minmax", ptq=BARE_PTQ)
    before = {p.name for p in (root / "cache").iterdir()}
    _, report, ctx = run(root, "entropy", algorithm="entropy", ptq=BARE_PTQ)
    assert ctx.backend.calibrations == 1 and "reused from" not in notes(report)
    _, report, ctx = run(root, "fewer", algorithm="minmax", samples=200, ptq=BARE_PTQ)
    assert ctx.backend.calibrations == 1
    after = {p.name for p in (root / "cache").iterdir()}
    assert len(after - before) == 2 and all(name.startswith("onnxruntime-") for name in after)
    for bundle in after - before:
        key = json.loads((root / "cache" / bundle / "key.json").read_text())["key"]
        assert key["backend"] == "onnxruntime" and len(key["modelSha256"]) == 64 and key["recipe"]["kind"] == "ranges"
