"""edgequant-worker as a process: where the spec comes from, the termination message, exit codes before any framework loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult

ROOT = Path(__file__).resolve().parents[3]
SPEC = {
    "method": "tflite-dynamic-range",
    "model": {"uri": "file:///nonexistent/m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
    "output": {"uri": "file:///nonexistent/out/"},
}


def _worker(
    tmp_path: Path, *args: str, spec_env: str | None = None
) -> tuple[subprocess.CompletedProcess[str], WorkerResult]:
    log = tmp_path / "termination-log"
    env = {k: v for k, v in os.environ.items() if k != "EDGEQUANT_SPEC"}
    env["EDGEQUANT_TERMINATION_LOG"] = str(log)
    if spec_env is not None:
        env["EDGEQUANT_SPEC"] = spec_env
    proc = subprocess.run(
        [sys.executable, "-m", "edgequant.worker.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    text = log.read_text()
    assert len(text.encode()) < 4096
    return proc, WorkerResult.from_termination_message(text)


def test_no_spec_is_invalid_input(tmp_path: Path) -> None:
    proc, result = _worker(tmp_path)
    assert proc.returncode == ExitCode.INVALID_INPUT == result.exit_code
    assert "no spec given" in result.message and "EDGEQUANT_SPEC" in result.message


def test_unparsable_and_invalid_specs_name_the_problem(tmp_path: Path) -> None:
    proc, result = _worker(tmp_path, spec_env="{not json")
    assert proc.returncode == ExitCode.INVALID_INPUT and "$EDGEQUANT_SPEC is not valid JSON" in result.message
    bad = {**SPEC, "method": "tflite-int8"}
    proc, result = _worker(tmp_path, json.dumps(bad))
    assert proc.returncode == ExitCode.INVALID_INPUT and "spec.calibration" in result.message


def test_missing_model_is_invalid_input_naming_the_uri(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({**SPEC, "output": {"uri": f"file://{tmp_path}/out/"}}))
    proc, result = _worker(tmp_path, "--spec-file", str(spec_file))
    assert proc.returncode == ExitCode.INVALID_INPUT
    assert "file:///nonexistent/m.keras: no such file" in result.message
    assert result.results is not None and result.results.report_uri == f"file://{tmp_path}/out/report.json"
    assert (
        "stage 1/" in proc.stderr
        and " fetch: download the model" in proc.stderr
        and "stage fetch FAILED" in proc.stderr
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1])["exitCode"] == ExitCode.INVALID_INPUT


def test_accident_is_an_internal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "workdir-is-a-file"
    blocker.write_text("")
    proc, result = _worker(tmp_path, "--workdir", str(blocker), spec_env=json.dumps(SPEC))
    assert proc.returncode == ExitCode.INTERNAL_ERROR == result.exit_code
    assert result.reason == "InternalError" and "FileExistsError" in result.message
