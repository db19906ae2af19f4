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


#: What a run that stops at its first stage has no use for: loading it costs each failing pod CPU (docs/operator.md).
LATER_STAGES_ONLY = (
    "numpy",
    "PIL",
    "edgequant.analysis",
    "edgequant.backends",
    "edgequant.data",
    "edgequant.worker.evaluate",
    "edgequant.worker.stages.data",
    "edgequant.worker.stages.baseline",
    "edgequant.worker.stages.quantize",
    "edgequant.worker.stages.analysis",
    "edgequant.worker.stages.measure",
)


def _modules_after_main(tmp_path: Path, *, sandbox: bool) -> tuple[int, set[str]]:
    """Run ``main`` in a fresh interpreter on a spec whose model is missing; its exit code and the modules it loaded."""
    spec = {**SPEC, "output": {"uri": f"file://{tmp_path}/out/"}}
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEQUANT_SPEC", "EDGEQUANT_SANDBOX")}
    env["EDGEQUANT_TERMINATION_LOG"] = str(tmp_path / "termination-log")
    env["EDGEQUANT_WORKDIR"] = str(tmp_path / "work")
    if sandbox:
        env["EDGEQUANT_SANDBOX"] = "1"
    script = (
        "import json, sys\nfrom edgequant.worker.main import main\n"
        f"code = main([{json.dumps(json.dumps(spec))}])\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    code, modules = json.loads(proc.stdout.strip().splitlines()[-1])
    return code, set(modules)


def _loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_a_run_that_fails_at_fetch_loads_only_what_fetch_and_the_report_need(tmp_path: Path) -> None:
    code, modules = _modules_after_main(tmp_path, sandbox=False)
    assert code == ExitCode.INVALID_INPUT
    assert (tmp_path / "out" / "report.json").is_file() and (tmp_path / "out" / "report.html").is_file()
    assert {"edgequant.worker.stages.fetch", "edgequant.report.build", "edgequant.report.html"} <= modules
    assert [p for p in LATER_STAGES_ONLY if _loaded(modules, p)] == []


def test_the_sandbox_parent_loads_the_api_and_storage_but_no_stage_or_report(tmp_path: Path) -> None:
    code, modules = _modules_after_main(tmp_path, sandbox=True)
    assert code == ExitCode.INVALID_INPUT  # the child's, after it wrote the report
    assert (tmp_path / "out" / "report.json").is_file()
    assert {"edgequant.api.v1alpha1", "edgequant.worker.sandbox", "edgequant.storage.broker"} <= modules
    loaded = [p for p in (*LATER_STAGES_ONLY, "edgequant.worker.pipeline", "edgequant.report") if _loaded(modules, p)]
    assert loaded == []
