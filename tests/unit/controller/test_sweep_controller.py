"""The sweep controller's pure parts: its status, its merge patch and its report Job."""

from __future__ import annotations

import json
from typing import Any

from edgequant.api import worker_contract as contract
from edgequant.controller import sweep as controller
from edgequant.controller.settings import OperatorSettings
from edgequant.sweep import plan

BODY: dict[str, Any] = {
    "apiVersion": "edgequant.io/v1alpha1",
    "kind": "QuantizationSweep",
    "metadata": {"name": "fm", "namespace": "team-a", "uid": "sweep-uid", "generation": 1},
    "spec": {
        "model": {"uri": "s3://b/m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "matrix": {"targets": ["jetson", "rpi-xnnpack"], "methods": ["tflite-float16"]},
        "output": {"uri": "s3://b/sweeps/fm/"},
        "storage": {"credentialsSecret": {"name": "s3-keys"}},
    },
}


def aggregate(finished: int, passed: int, cells: int = 2) -> dict[str, Any]:
    return {
        "cells": cells,
        "finished": finished,
        "passed": passed,
        "candidates": [],
        "paretoFront": [],
        "recommendations": [],
    }


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_completed_only_once_every_cell_and_the_report_finished() -> None:
    running = controller.desired_status(
        previous={}, generation=1, aggregate=aggregate(1, 1), skipped=[], report=None, report_uri=None, started=True
    )
    assert running["phase"] == "Running" and conditions(running) == {"Completed": "False", "Failed": "False"}
    writing = controller.desired_status(
        previous=running,
        generation=1,
        aggregate=aggregate(2, 1),
        skipped=[],
        report=None,
        report_uri=None,
        started=True,
    )
    assert writing["phase"] == "Running" and writing["reason"] == "WritingReport"
    done = controller.desired_status(
        previous=writing,
        generation=1,
        aggregate=aggregate(2, 1),
        skipped=[],
        report="Complete",
        report_uri="s3://b/sweeps/fm/report.html",
        started=True,
    )
    assert done["phase"] == "Completed" and done["reason"] == "Completed" and conditions(done)["Completed"] == "True"
    assert done["reportUri"] == "s3://b/sweeps/fm/report.html"
    # Unchanged conditions keep their transition time; the patch carries only what changed.
    again = controller.desired_status(
        previous=done,
        generation=1,
        aggregate=aggregate(2, 1),
        skipped=[],
        report="Complete",
        report_uri="s3://b/sweeps/fm/report.html",
        started=True,
    )
    assert controller.changed_fields(done, again) == {}


def test_no_passing_cell_and_a_failed_report_are_said() -> None:
    status = controller.desired_status(
        previous={}, generation=1, aggregate=aggregate(2, 0), skipped=[], report="Failed", report_uri=None, started=True
    )
    assert status["phase"] == "Completed" and status["reason"] == "NoCandidatePassed"
    assert "report was not written" in status["message"]


def test_an_invalid_sweep_fails_and_its_stale_fields_are_removed() -> None:
    previous = {"phase": "Running", "cells": 2, "candidates": []}
    status = controller.desired_status(
        previous=previous,
        generation=2,
        aggregate=None,
        skipped=[],
        report=None,
        report_uri=None,
        invalid="spec.matrix: no cell",
    )
    assert status["phase"] == "Failed" and conditions(status) == {"Completed": "False", "Failed": "True"}
    patch = controller.changed_fields(previous, status)
    assert patch["cells"] is None and patch["candidates"] is None and patch["phase"] == "Failed"


def test_the_report_job_is_the_sweeps_own_on_the_cpu_with_the_storage_keys_by_reference() -> None:
    sweep = plan.parse(BODY)
    cells, _ = plan.expand("fm", sweep.spec)
    status = {"cells": 2, "candidates": [{"name": cells[0].name}]}
    job = controller.render_report_job(
        body=BODY, sweep=sweep, cell=cells[0], status=status, settings=OperatorSettings()
    )
    meta = job["metadata"]
    assert meta["name"] == "fm-report-g1" and meta["labels"][controller.LABEL_REPORT] == "fm"
    assert (
        "app.kubernetes.io/managed-by" not in meta["labels"]
    )  # not a quantizer Job: the QuantizationJob handlers skip it
    assert (
        meta["ownerReferences"][0]["kind"] == "QuantizationSweep" and meta["ownerReferences"][0]["uid"] == "sweep-uid"
    )
    pod = job["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod or "nvidia.com/gpu.present" not in pod["nodeSelector"]
    (container,) = pod["containers"]
    assert container["command"] == ["edgequant", "sweep-report"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    env = {e["name"]: e for e in container["env"]}
    assert contract.SPEC_ENV not in env
    assert json.loads(env[contract.SWEEP_ENV]["value"])["status"] == status
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-keys",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
