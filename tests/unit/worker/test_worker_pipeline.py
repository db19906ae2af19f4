"""The pipeline's contract: stage order, one exit code per error class, a report after every outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import REASONS, ExitCode
from edgequant.api.result import WorkerResult
from edgequant.util import errors
from edgequant.worker import pipeline
from edgequant.worker.progress import SilentProgress
from edgequant.worker.runner import run_job, spec_from_document

SPEC = {
    "method": "tflite-dynamic-range",
    "model": {"uri": "file:///models/m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
    "output": {"uri": "file:///out/"},
}


def _spec(tmp_path: Path) -> api.QuantizationJobSpec:
    return api.QuantizationJobSpec.model_validate({**SPEC, "output": {"uri": f"file://{tmp_path}/out/"}})


def _raising(exc: Exception) -> pipeline.Stage:
    def run(ctx: object) -> None:
        raise exc

    return pipeline.Stage("boom", "raise", run)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidInputError("bad model"), ExitCode.INVALID_INPUT),
        (errors.DataValidationError("noise"), ExitCode.DATA_VALIDATION_FAILED),
        (errors.AcceptanceError("drop too big"), ExitCode.ACCEPTANCE_FAILED),
        (errors.StorageUnavailableError("endpoint down"), ExitCode.STORAGE_UNAVAILABLE),
        (errors.AcceleratorUnavailableError("no GPU"), ExitCode.ACCELERATOR_UNAVAILABLE),
        (ZeroDivisionError("oops"), ExitCode.INTERNAL_ERROR),
    ],
)
def test_each_error_class_ends_with_its_exit_code_and_a_report(
    tmp_path: Path, error: Exception, code: ExitCode
) -> None:
    ran: list[str] = []
    after = pipeline.Stage("after", "never reached", lambda ctx: ran.append("after"))
    result, ctx = run_job(
        _spec(tmp_path), workdir=tmp_path / "work", progress=SilentProgress(), stages=[_raising(error), after]
    )
    assert (result.exit_code, result.reason) == (int(code), REASONS[code])
    assert str(error) in result.message
    assert ran == []
    assert [(s.name, s.ok) for s in ctx.stages] == [("boom", False)]
    assert result.stage == "1/2 boom"  # the operator's status.progress
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["outcome"] == {
        "succeeded": False,
        "exitCode": int(code),
        "reason": REASONS[code],
        "message": result.message,
        "degraded": False,
    }
    assert result.results is not None and result.results.report_uri == f"file://{tmp_path}/out/report.json"
    assert result.results.artifact is None


def test_success_runs_every_stage_in_order(tmp_path: Path) -> None:
    order: list[str] = []
    stages = [pipeline.Stage(n, n, lambda ctx, n=n: order.append(n)) for n in ("a", "b", "c")]
    result, _ctx = run_job(_spec(tmp_path), workdir=tmp_path / "work", progress=SilentProgress(), stages=stages)
    assert result.exit_code == 0 and order == ["a", "b", "c"]
    assert WorkerResult.from_termination_message(result.to_termination_message()).stage == "3/3 c"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["outcome"]["succeeded"] is True


def test_unwritable_output_turns_success_into_a_failure(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file where the output folder should be")
    result, _ = run_job(_spec(tmp_path), workdir=tmp_path / "work", progress=SilentProgress(), stages=[])
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert result.message.startswith("report.json not uploaded: cannot write")


def test_stage_table_and_insert_after() -> None:
    names = [s.name for s in pipeline.STAGES]
    core = ["fetch", "validate-data", "baseline", "quantize", "evaluate", "gate", "upload"]
    assert [n for n in names if n in core] == core  # analyses sit between evaluate and gate
    assert names[0] == "fetch" and names[-2:] == ["gate", "upload"]
    extra = pipeline.Stage("sensitivity", "per-layer sensitivity", lambda ctx: None)
    assert [s.name for s in pipeline.insert_after(pipeline.STAGES, "quantize", extra)][3:5] == [
        "quantize",
        "sensitivity",
    ]
    with pytest.raises(KeyError):
        pipeline.insert_after(pipeline.STAGES, "absent", extra)


def test_every_stage_of_the_table_names_a_stage_function() -> None:
    """The table imports each stage's module when the run reaches it; a misspelt name would surface only then."""
    for stage in pipeline.STAGES:
        assert isinstance(stage.run, pipeline.StageFunction), stage.name
        function = stage.run.resolve()
        assert callable(function) and function.__module__ == f"edgequant.worker.stages.{stage.run.module}"


def test_spec_documents_whole_or_bare_with_named_problems() -> None:
    whole = {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationJob",
        "metadata": {"name": "j", "namespace": "ns"},
        "spec": SPEC,
    }
    spec, name, namespace = spec_from_document(whole)
    assert (spec.method, name, namespace) == (api.Method.TFLITE_DYNAMIC_RANGE, "j", "ns")
    assert spec_from_document(SPEC)[1] is None
    with pytest.raises(errors.InvalidInputError, match=r"spec.calibration: .*add calibration.dataset"):
        spec_from_document({**SPEC, "method": "tflite-int8"})
    with pytest.raises(errors.InvalidInputError, match=r"spec.model.input.shape"):
        spec_from_document({**SPEC, "model": {"uri": "file:///m.keras", "input": {"shape": [28, 28]}}})


def test_spec_warnings_reach_the_report_notes_and_do_not_fail_the_run(tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read by fetch")
    spec = api.QuantizationJobSpec.model_validate(
        {
            **SPEC,
            "model": {**SPEC["model"], "uri": f"file://{model}"},
            "output": {"uri": f"file://{tmp_path}/out/"},
            "tensorrt": {"batchSize": 8},
        }
    )
    fetch = next(s for s in pipeline.STAGES if s.name == "fetch")
    result, _ctx = run_job(spec, workdir=tmp_path / "work", progress=SilentProgress(), stages=[fetch])
    assert result.exit_code == 0, result.message
    notes = json.loads((tmp_path / "out" / "report.json").read_text())["notes"]
    assert any(n.startswith("spec warning: spec.tensorrt: ") and "(fix: remove spec.tensorrt" in n for n in notes), (
        notes
    )
