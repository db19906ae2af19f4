"""`edgequant run job.yaml` on file:// data: no server, relative URIs, one summary table for several jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration


def test_run_two_jobs_from_one_file_prints_one_table(
    trained_cnn: Path, fmnist_files: dict[str, Path], tmp_path: Path
) -> None:
    # Relative file:// URIs resolve against the job file's folder.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "cnn.keras").symlink_to(trained_cnn)
    (tmp_path / "data").symlink_to(fmnist_files["test"].parent)
    contract = {"shape": [28, 28, 1], "colorOrder": "GRAY"}
    jobs = [
        {
            "apiVersion": "edgequant.io/v1alpha1",
            "kind": "QuantizationJob",
            "metadata": {"name": f"local-{name}"},
            "spec": {
                "method": method,
                "model": {"uri": "file://models/cnn.keras", "input": contract},
                "evaluation": {"dataset": {"uri": "file://data/test.npz", "layout": "npz"}, "samples": 300},
                "acceptance": {"maxAccuracyDrop": 0.02},
                "mixedPrecision": {"sensitivity": "off"},
                "output": {"uri": f"file://out/{name}/"},
                **extra,
            },
        }
        for name, method, extra in (
            ("fp16", "tflite-float16", {}),
            ("int8", "tflite-int8", {"calibration": {"dataset": {"uri": "file://data/calibration/"}, "samples": 300}}),
        )
    ]
    job_file = tmp_path / "jobs.yaml"
    job_file.write_text(yaml.safe_dump_all(jobs, sort_keys=False))
    cli = Path(sys.executable).with_name("edgequant")
    proc = subprocess.run([str(cli), "run", str(job_file)], capture_output=True, text=True, cwd="/", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for column in ("method", "size", "ratio", "accuracy", "drop", "latency"):
        assert column in table
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]]
        for line in table.splitlines()
        if line.startswith("│")
    }
    assert set(rows) == {"(baseline)", "local-fp16", "local-int8"}
    assert rows["local-int8"][1] == "tflite-int8" and rows["local-int8"][-1] == "ok"
    assert float(rows["local-fp16"][3].rstrip("x")) > 1.8 and float(rows["local-int8"][3].rstrip("x")) > 3
    assert (tmp_path / "out" / "int8" / "report.json").is_file()
    assert list((tmp_path / "out" / "int8").glob("*.int8.tflite"))
    assert "validate-data" in proc.stderr  # progress went to stderr, the table to stdout


def test_run_reports_an_invalid_job_with_its_exit_code(tmp_path: Path) -> None:
    job = tmp_path / "bad.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "edgequant.io/v1alpha1",
                "kind": "QuantizationJob",
                "metadata": {"name": "bad"},
                "spec": {
                    "method": "tflite-int8",
                    "model": {"uri": "file://m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
                    "output": {"uri": "file://out/"},
                },
            }
        )
    )
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("edgequant")), "run", str(job)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 10
    assert "spec.calibration" in proc.stderr and "InvalidInput" in proc.stdout
