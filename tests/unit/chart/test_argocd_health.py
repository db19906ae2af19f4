"""The Argo CD health check (gitops/argocd/quantizationjob-health.lua) on sample statuses, in real Lua interpreters.

Argo CD embeds a Lua 5.1 dialect; Debian's lua5.1 and lua5.4 (installed by `make lua`) bracket it. Sample
statuses are built with the API's own status models, so a renamed status field breaks these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_tools import ROOT, find_tool

from edgequant.api import v1alpha1 as api
from edgequant.api.conditions import ConditionStatus, ConditionType, Phase, Reason
from edgequant.api.exitcodes import REASONS, ExitCode

SCRIPT = ROOT / "gitops" / "argocd" / "quantizationjob-health.lua"
COMPONENT = ROOT / "gitops" / "argocd"
INTERPRETERS = ["lua5.1", "lua5.4"]
NOW = "2026-11-26T10:00:00Z"


def lua_literal(value: Any) -> str:
    """A Python JSON value as a Lua table constructor (the shape Argo CD hands the script as `obj`)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid Lua escapes for this text
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not JSON: {value!r}")


def assess(interpreter: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run the health script the way Argo CD does: `obj` is a global, the chunk returns the health table."""
    lua = find_tool(interpreter, "lua")
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = assert(loadfile({json.dumps(str(SCRIPT))}))()\n"
        'io.write(hs.status, "\\n", hs.message)\n'
    )
    done = subprocess.run([lua, "-"], input=program, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status, _, message = done.stdout.partition("\n")
    return status, message


def condition(kind: ConditionType, status: ConditionStatus, reason: str, message: str = "") -> api.Condition:
    return api.Condition(
        type=kind, status=status, reason=reason, message=message, last_transition_time=NOW, observed_generation=1
    )


def job(status: api.QuantizationJobStatus | dict[str, Any] | None, *, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "fmnist-int8", "namespace": "ml", "generation": generation},
        "spec": {"method": "tflite-int8"},
    }
    if isinstance(status, api.QuantizationJobStatus):
        obj["status"] = status.to_wire()
    elif status is not None:
        obj["status"] = status
    return obj


RESULTS = api.Results(
    artifact=api.ArtifactInfo(uri="s3://artifacts/fmnist-int8/model.tflite", sha256="ab" * 32, size_bytes=104_000),
    method=api.Method.TFLITE_INT8,
    compression_ratio=3.1234,
    accuracy_drop=0.0042,
    report_uri="s3://artifacts/fmnist-int8/report.json",
)

CASES: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    "no status yet": (job(None), "Progressing", ["Waiting for the edgequant operator"]),
    "stale generation": (
        job(api.QuantizationJobStatus(phase=Phase.SUCCEEDED, observed_generation=1, results=RESULTS), generation=2),
        "Progressing",
        ["generation 2"],
    ),
    "pending": (
        job(
            api.QuantizationJobStatus(
                phase=Phase.PENDING,
                observed_generation=1,
                conditions=[
                    condition(
                        ConditionType.RUNNING,
                        ConditionStatus.FALSE,
                        Reason.WAITING_FOR_CAPACITY,
                        "3 jobs running, cap is 3",
                    )
                ],
            )
        ),
        "Progressing",
        ["Pending", "3 jobs running, cap is 3"],
    ),
    "running with a stage": (
        job(
            api.QuantizationJobStatus(
                phase=Phase.RUNNING,
                observed_generation=1,
                conditions=[
                    condition(
                        ConditionType.RUNNING, ConditionStatus.TRUE, Reason.POD_RUNNING, "pod fmnist-int8-1-x running"
                    )
                ],
                progress=api.Progress(stage="calibrate", message="500 samples"),
            )
        ),
        "Progressing",
        ["Running (stage: calibrate)", "pod fmnist-int8-1-x running"],
    ),
    "succeeded": (
        job(
            api.QuantizationJobStatus(
                phase=Phase.SUCCEEDED,
                observed_generation=1,
                conditions=[
                    condition(ConditionType.SUCCEEDED, ConditionStatus.TRUE, Reason.COMPLETED),
                    condition(ConditionType.DEGRADED, ConditionStatus.FALSE, Reason.WITHIN_BUDGET),
                ],
                results=RESULTS,
            )
        ),
        "Healthy",
        ["tflite-int8", "ratio 3.12x", "accuracy drop 0.0042", "s3://artifacts/fmnist-int8/model.tflite"],
    ),
    "succeeded but degraded": (
        job(
            api.QuantizationJobStatus(
                phase=Phase.SUCCEEDED,
                observed_generation=1,
                conditions=[
                    condition(ConditionType.SUCCEEDED, ConditionStatus.TRUE, Reason.COMPLETED_DEGRADED),
                    condition(
                        ConditionType.DEGRADED,
                        ConditionStatus.TRUE,
                        Reason.COMPLETED_DEGRADED,
                        "fell back to tflite-float16",
                    ),
                ],
                results=RESULTS.model_copy(update={"degraded": True, "method": api.Method.TFLITE_FLOAT16}),
            )
        ),
        "Degraded",
        ["degraded artifact", "tflite-float16", "fell back to tflite-float16"],
    ),
    "failed": (
        job(
            api.QuantizationJobStatus(
                phase=Phase.FAILED,
                observed_generation=1,
                conditions=[
                    condition(
                        ConditionType.FAILED,
                        ConditionStatus.TRUE,
                        REASONS[ExitCode.DATA_VALIDATION_FAILED],
                        "calibration set has 40 samples, needs 100: add samples or lower calibration.minSamples",
                    )
                ],
                reason=REASONS[ExitCode.DATA_VALIDATION_FAILED],
            )
        ),
        "Degraded",
        ["DataValidationFailed: calibration set has 40 samples"],
    ),
    "failed by phase only, no message": (
        job({"phase": "Failed", "observedGeneration": 1}),
        "Degraded",
        ["Quantization failed"],
    ),
    "suspended": (
        job(
            api.QuantizationJobStatus(
                phase=Phase.SUSPENDED,
                observed_generation=1,
                conditions=[
                    condition(ConditionType.SUSPENDED, ConditionStatus.TRUE, Reason.SUSPENDED, "spec.suspend is true")
                ],
            )
        ),
        "Suspended",
        ["spec.suspend is true"],
    ),
    "queued in Kueue": (
        job(
            api.QuantizationJobStatus(
                phase=Phase.QUEUED,
                observed_generation=1,
                conditions=[
                    condition(ConditionType.RUNNING, ConditionStatus.FALSE, "Pending", ""),
                    condition(
                        ConditionType.QUEUED,
                        ConditionStatus.TRUE,
                        "Pending",
                        "Kueue, LocalQueue q: insufficient unused quota for cpu",
                    ),
                ],
                reason="Pending",
                message="Kueue, LocalQueue q: insufficient unused quota for cpu",
            )
        ),
        "Progressing",
        ["Queued", "insufficient unused quota"],
    ),
    "a phase this script does not know": (
        job({"phase": "Hibernating", "observedGeneration": 1}),
        "Unknown",
        ["Hibernating"],
    ),
}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize("case", list(CASES))
def test_health_of_sample_statuses(interpreter: str, case: str) -> None:
    obj, expected_status, fragments = CASES[case]
    status, message = assess(interpreter, obj)
    assert status == expected_status, message
    for fragment in fragments:
        assert fragment in message


def test_conditions_win_over_a_stale_phase() -> None:
    """Automation reads conditions: a Failed=True condition decides even if the phase still says Running."""
    obj = job(
        {
            "phase": "Running",
            "observedGeneration": 1,
            "conditions": [
                condition(ConditionType.FAILED, ConditionStatus.TRUE, "BackoffLimitExceeded", "3 attempts").to_wire()
            ],
        }
    )
    assert assess("lua5.4", obj) == ("Degraded", "BackoffLimitExceeded: 3 attempts")


def test_kustomize_component_embeds_the_script_verbatim(tmp_path: Path) -> None:
    """The component merges the Lua file itself into argocd-cm, under the key Argo CD looks up for our kind."""
    kubectl = find_tool("kubectl", "cluster-bins")
    (tmp_path / "argocd-cm.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm"},
                "data": {"url": "https://argocd.example"},
            }
        )
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["argocd-cm.yaml"], "components": [os.path.relpath(COMPONENT, tmp_path)]})
    )
    built = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    cm = yaml.safe_load(built.stdout)
    key = f"resource.customizations.health.{api.GROUP}_{api.KIND}"
    assert cm["data"][key] == SCRIPT.read_text()
    assert cm["data"]["url"] == "https://argocd.example"
