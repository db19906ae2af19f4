"""The Argo CD health check for QuantizationSweep (gitops/argocd/quantizationsweep-health.lua), in real Lua
interpreters, on statuses made by the operator's own status function and checked against the API model."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from chart_tools import ROOT, find_tool

from edgequant.api import sweep as sweep_api
from edgequant.controller import sweep as controller

SCRIPT = ROOT / "gitops" / "argocd" / "quantizationsweep-health.lua"


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"


def assess(interpreter: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = find_tool(interpreter, "lua")
    program = f'obj = {lua_literal(obj)}\nlocal hs = assert(loadfile({json.dumps(str(SCRIPT))}))()\nio.write(hs.status, "\\n", hs.message)\n'
    done = subprocess.run([lua, "-"], input=program, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status, _, message = done.stdout.partition("\n")
    return status, message


def sweep(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    if status is not None:
        sweep_api.QuantizationSweepStatus.model_validate(status)  # the sample is a status the API accepts
    return {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationSweep",
        "metadata": {"name": "fm", "generation": generation},
        "status": status,
    }


def made(finished: int, passed: int, *, report: str | None = None, invalid: str | None = None) -> dict[str, Any]:
    aggregate = {
        "cells": 2,
        "finished": finished,
        "passed": passed,
        "candidates": [],
        "paretoFront": [],
        "recommendations": [
            {
                "target": "rpi-xnnpack",
                "candidate": "fm-rpi-xnnpack-tflite-int8",
                "method": "tflite-int8",
                "reason": "smallest",
            }
        ]
        if passed
        else [],
    }
    return controller.desired_status(
        previous={},
        generation=1,
        aggregate=None if invalid else aggregate,
        skipped=[],
        report=report,
        report_uri=None,
        started=True,
        invalid=invalid,
    )


CASES = {
    "no status": (None, "Progressing", "pick up the sweep"),
    "running": (made(1, 1), "Progressing", "Running: 1 of 2 cells finished"),
    "writing the report": (made(2, 1), "Progressing", "Running"),
    "completed": (made(2, 1, report="Complete"), "Healthy", "recommended rpi-xnnpack: fm-rpi-xnnpack-tflite-int8"),
    "none passed": (made(2, 0, report="Complete"), "Degraded", "0 of 2 cells within the budget"),
    "invalid": (made(0, 0, invalid="spec.matrix: no cell"), "Degraded", "InvalidSpec: spec.matrix: no cell"),
}


@pytest.mark.parametrize("interpreter", ["lua5.1", "lua5.4"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_health_of_sweep_statuses(interpreter: str, case: str) -> None:
    status, health, words = CASES[case]
    got, message = assess(interpreter, sweep(status))
    assert got == health and words in message, (got, message)


def test_a_newer_generation_is_progressing() -> None:
    assert assess("lua5.4", sweep(made(2, 1, report="Complete"), generation=2))[0] == "Progressing"
