"""The CLI: validate's exit codes and output, crd, and a fast start without heavy frameworks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INVALID = Path(__file__).parent / "manifests" / "invalid"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgequant.cli.main", *args], capture_output=True, text=True, cwd=ROOT)


def test_validate_examples_exit_zero() -> None:
    proc = _cli("validate", *[str(p) for p in sorted((ROOT / "examples").glob("*.yaml"))])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("valid QuantizationJob") == len(list((ROOT / "examples").glob("*.yaml")))


def test_validate_invalid_exits_two_with_field() -> None:
    proc = _cli("validate", str(INVALID / "tensorrt-on-cpu.yaml"))
    assert proc.returncode == 2
    assert "spec.resources.accelerator" in proc.stderr and "fix:" in proc.stderr


def test_validate_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    proc = _cli("validate", str(bad), str(tmp_path / "absent.yaml"))
    assert proc.returncode == 2
    assert "not valid YAML" in proc.stderr and "no such file" in proc.stderr


def test_crd_prints_committed_file() -> None:
    proc = _cli("crd")
    assert proc.returncode == 0
    assert proc.stdout == (ROOT / "crds" / "edgequant.io_quantizationjobs.yaml").read_text()


def test_help_and_import_load_no_heavy_framework() -> None:
    code = (
        "import sys, edgequant, edgequant.api, edgequant.cli.main as m\n"
        "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "m.main(['validate', 'examples/01-tflite-dynamic-range.yaml'])\n"
        "heavy = [n for n in ('tensorflow', 'torch', 'tensorrt', 'onnxruntime', 'keras', 'pycuda') if n in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
