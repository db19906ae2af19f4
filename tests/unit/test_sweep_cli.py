"""`edgequant validate` and `edgequant crd` on QuantizationSweeps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgequant.api import crd
from edgequant.cli.main import main

SWEEP = {
    "apiVersion": "edgequant.io/v1alpha1",
    "kind": "QuantizationSweep",
    "metadata": {"name": "fm"},
    "spec": {
        "model": {"uri": "s3://b/m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "matrix": {"targets": ["rpi-xnnpack", "x86-avx2"]},
        "calibration": {"dataset": {"uri": "s3://b/cal/"}},
        "output": {"uri": "s3://b/sweeps/fm/"},
    },
}


def test_validate_lists_the_cells_and_the_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "valid QuantizationSweep fm (3 cells: fm-rpi-xnnpack-tflite-int8, fm-rpi-xnnpack-tflite-float16, fm-x86-avx2-tflite-int8)"
        in out
    )
    assert "skipped: x86-avx2 / onnx-static: onnx-static does not take a keras model" in out


def test_validate_names_the_field_of_an_invalid_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump({**SWEEP, "spec": {**SWEEP["spec"], "matrix": {"targets": ["pi"]}, "concurrency": 0}})
    )
    assert main(["validate", str(path)]) != 0
    err = capsys.readouterr().err
    assert "spec.matrix.targets: unknown target(s) pi" in err and "spec.concurrency" in err


def test_crd_prints_either_kind_or_both_and_writes_the_committed_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["crd", "--all"]) == 0
    kinds = [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert kinds == ["QuantizationJob", "QuantizationSweep"]
    assert main(["crd", "--kind", "QuantizationSweep"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["metadata"]["name"] == "quantizationsweeps.edgequant.io"
    assert main(["crd", "--out-dir", str(tmp_path)]) == 0
    root = Path(__file__).resolve().parents[2] / "crds"
    for _kind, (_build, name) in crd.CRDS.items():
        assert (tmp_path / name).read_text() == (root / name).read_text()
