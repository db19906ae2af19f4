"""spec.target on an ONNX model through the worker: the target's instruction set, not this machine's CPU, decides
ONNX Runtime's reduce_range (x86 without VNNI: 7-bit weights; with VNNI: the full 8 bits), whatever CPU runs the test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api.exitcodes import ExitCode
from tests.integration.onnx.conftest import CONTRACT, CnnFiles, initializers

pytestmark = pytest.mark.integration

BARE_PTQ = {
    "selectAlgorithm": False,
    "crossLayerEqualization": "off",
    "biasCorrection": "off",
    "rangeSearch": "off",
    "sixteenBitWeights": "off",
    "adaptiveRounding": "off",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, fmnist_cnn: CnnFiles, fmnist_npz: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("onnx-target")
    shutil.copy(fmnist_cnn.onnx, root / "cnn.onnx")
    shutil.copy(fmnist_npz["train"], root / "train.npz")
    shutil.copy(fmnist_npz["test"], root / "test.npz")
    return root


def _run(root: Path, target: str) -> tuple[Any, dict[str, Any], Path]:
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    doc = {
        "target": target,
        "model": {"uri": f"file://{root}/cnn.onnx", "input": CONTRACT},
        "calibration": {"dataset": {"uri": f"file://{root}/train.npz", "layout": "npz"}, "samples": 200},
        "evaluation": {"dataset": {"uri": f"file://{root}/test.npz", "layout": "npz"}, "samples": 300},
        "acceptance": {"maxAccuracyDrop": 0.05},
        "ptq": BARE_PTQ,
        "output": {"uri": f"file://{root}/{target}/"},
    }
    spec, _name, _ns = spec_from_document(doc)
    result, ctx = run_job(spec, workdir=root / f"work-{target}", progress=SilentProgress())
    report = json.loads((root / target / "report.json").read_text())
    return result, report, ctx.artifact.path


def _weight_range(path: Path) -> tuple[int, int]:
    ints = [a for a in initializers(path).values() if a.dtype == np.int8 and a.ndim == 4]
    return int(min(a.min() for a in ints)), int(max(a.max() for a in ints))


#: Largest |int8| of symmetric weights: 7 bits (reduce_range) reach 64, the full 8 bits 127.
SEVEN_BIT_MAX = 64


@pytest.mark.parametrize(("target", "reduce_range"), [("x86-avx2", "always"), ("x86-vnni", "never")])
def test_the_targets_isa_decides_reduce_range(root: Path, target: str, reduce_range: str) -> None:
    result, report, artifact = _run(root, target)
    assert result.exit_code == ExitCode.SUCCESS, result.message
    chosen = {c["field"]: c for c in report["target"]["choices"]}
    assert chosen["spec.method"]["value"] == "onnx-static"
    assert chosen["spec.onnx.reduceRange"]["value"] == reduce_range
    assert (
        "onnxruntime.ai" in chosen["spec.onnx.reduceRange"]["reason"]
        and "worker's own CPU does not decide" in chosen["spec.onnx.reduceRange"]["reason"]
    )
    assert report["spec"]["onnx"]["reduceRange"] == reduce_range
    low, high = _weight_range(artifact)
    widest = max(-low, high)
    if reduce_range == "always":
        assert widest <= SEVEN_BIT_MAX, (low, high)
    else:  # per-channel symmetric weights reach +-127 in every channel's largest weight
        assert widest > SEVEN_BIT_MAX, (low, high)
    assert any("not on the target" in n for n in report["target"]["notes"])
