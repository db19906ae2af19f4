"""acceptance.onFailure remedy: the planner's order and the ladder it drives over an injected build()."""

from __future__ import annotations

from typing import Any

from edgequant.analysis.remedy import MAX_SAMPLES, RUNGS, RemedyStep, plan_remedies
from edgequant.analysis.selection import Candidate, select_artifact
from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode

BASELINE_ACC, BASELINE_SIZE = 0.90, 400_000


def _spec(**overrides: Any) -> api.QuantizationJobSpec:
    doc: dict[str, Any] = {
        "model": {"uri": "file:///m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "method": "tflite-int8",
        "calibration": {"dataset": {"uri": "file:///cal/"}, "samples": 200},
        "evaluation": {"dataset": {"uri": "file:///eval/"}},
        "training": {"dataset": {"uri": "file:///train/"}},
        "acceptance": {"maxAccuracyDrop": 0.02, "onFailure": "remedy"},
        "output": {"uri": "file:///out/"},
    }
    doc.update(overrides)
    return api.QuantizationJobSpec.model_validate(doc)


ONNX = {"uri": "file:///m.onnx", "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"}}


def test_tflite_plan_is_more_samples_then_qat_and_says_why_the_algorithm_rung_is_skipped() -> None:
    plan = plan_remedies(_spec(), calibration_available=5000, calibration_used=200)
    assert [s.rung for s in plan.before_pinning] == ["more-samples"]
    assert plan.before_pinning[0].spec.calibration.samples == MAX_SAMPLES
    assert plan.before_pinning[0].changes == {"spec.calibration.samples": str(MAX_SAMPLES)}
    assert [(s.rung, s.method) for s in plan.after_pinning] == [("qat", api.Method.TFLITE_QAT)]
    assert any(w.startswith("calibration-algorithm: tflite-int8 calibrates with min/max only") for w in plan.skipped)


def test_more_samples_stops_at_what_the_dataset_holds_and_is_skipped_when_all_are_used() -> None:
    assert (
        plan_remedies(_spec(), calibration_available=500, calibration_used=200)
        .before_pinning[0]
        .spec.calibration.samples
        == 500
    )
    plan = plan_remedies(_spec(), calibration_available=200, calibration_used=200)
    assert plan.before_pinning == () and any(
        w.startswith("more-samples: calibration already uses 200") for w in plan.skipped
    )


def test_onnx_static_tries_the_other_algorithms_after_more_samples_when_the_spec_wrote_one() -> None:
    spec = _spec(
        model=ONNX,
        method="onnx-static",
        calibration={"dataset": {"uri": "file:///cal/"}, "samples": 200, "algorithm": "minmax"},
    )
    plan = plan_remedies(spec, calibration_available=2000, calibration_used=200)
    rungs = [(s.rung, s.spec.calibration.algorithm.value, s.spec.calibration.samples) for s in plan.before_pinning]
    assert rungs == [
        ("more-samples", "minmax", 1000),
        ("calibration-algorithm", "entropy", 1000),
        ("calibration-algorithm", "percentile", 1000),
    ]
    assert all(not s.spec.ptq.select_algorithm for s in plan.before_pinning[1:])
    # no QAT method in the ONNX family takes an ONNX model
    assert plan.after_pinning == () and any(w.startswith("qat:") for w in plan.skipped)


def test_onnx_static_with_the_algorithm_left_to_ptq_skips_the_algorithm_rung() -> None:
    plan = plan_remedies(_spec(model=ONNX, method="onnx-static"), calibration_available=2000, calibration_used=200)
    assert [s.rung for s in plan.before_pinning] == ["more-samples"]
    assert any("ptq.selectAlgorithm already chose" in w for w in plan.skipped)


def test_qat_needs_training_data() -> None:
    doc = _spec().model_dump(by_alias=True, exclude_none=True)
    doc.pop("training")
    plan = plan_remedies(api.QuantizationJobSpec.model_validate(doc), calibration_available=1000, calibration_used=200)
    assert plan.after_pinning == () and any("tflite-qat needs training data" in w for w in plan.skipped)


class Ladder:
    """Scores each rung from a table; records the order of builds."""

    def __init__(self, accuracy: dict[str, float]) -> None:
        self.accuracy = accuracy
        self.order: list[str] = []

    def build(self, rung: str, method: api.Method, pins: tuple[str, ...]) -> Candidate:
        key = rung if rung != "pinned" else f"pinned:{len(pins)}"
        self.order.append(key)
        size = BASELINE_SIZE // 2 if rung == "float16" else 100_000 + 10_000 * len(pins)
        return Candidate(method=method, pinned=pins, accuracy=self.accuracy.get(key, 0.5), size_bytes=size)

    def step(self, step: RemedyStep) -> Candidate:
        self.order.append(step.rung)
        return Candidate(method=step.method, pinned=(), accuracy=self.accuracy.get(step.rung, 0.5), size_bytes=100_000)


def _select(spec: api.QuantizationJobSpec, ladder: Ladder) -> Any:
    return select_artifact(
        spec=spec,
        baseline_accuracy=BASELINE_ACC,
        baseline_size=BASELINE_SIZE,
        build=ladder.build,
        ranking=lambda: ["conv2", "conv3", "fc1"],
        pinnable=True,
        fallback_method=api.Method.TFLITE_FLOAT16,
        remedy=plan_remedies(spec, calibration_available=1000, calibration_used=200),
        build_step=ladder.step,
    )


def test_the_ladder_walks_the_rungs_in_order_while_the_budget_is_missed() -> None:
    ladder = Ladder({"float16": 0.899})
    sel = _select(_spec(mixedPrecision={"maxPinnedLayers": 2}), ladder)
    assert ladder.order == ["full", "more-samples", "pinned:1", "pinned:2", "qat", "float16"]
    assert [t.rung for t in sel.gate.trials] == ["full", "more-samples", "pinned", "pinned", "qat", "float16"]
    assert sel.gate.rung == "float16" and sel.chosen.method is api.Method.TFLITE_FLOAT16 and sel.degraded
    assert sel.gate.trials[1].changes == {"spec.calibration.samples": "1000"}
    # the order is the documented one
    assert [r for r in RUNGS if r in {t.rung for t in sel.gate.trials}] == list(
        dict.fromkeys(t.rung for t in sel.gate.trials)
    )


def test_the_ladder_stops_at_the_first_rung_that_passes_and_names_it() -> None:
    ladder = Ladder({"more-samples": 0.895})
    sel = _select(_spec(), ladder)
    assert ladder.order == ["full", "more-samples"]
    assert sel.exit_code is ExitCode.SUCCESS and sel.gate.passed and not sel.degraded
    assert sel.gate.rung == "more-samples" and sel.message.startswith("published more-samples (tflite-int8)")


def test_qat_passes_after_pinning_misses() -> None:
    ladder = Ladder({"qat": 0.89})
    sel = _select(_spec(mixedPrecision={"maxPinnedLayers": 1}), ladder)
    assert ladder.order == ["full", "more-samples", "pinned:1", "qat"]
    assert (
        sel.gate.rung == "qat" and sel.chosen.method is api.Method.TFLITE_QAT and sel.gate.passed and not sel.degraded
    )


def test_pinned_layers_that_pass_are_a_remedy_not_a_degradation() -> None:
    ladder = Ladder({"pinned:2": 0.89})
    sel = _select(_spec(), ladder)
    assert ladder.order == ["full", "more-samples", "pinned:1", "pinned:2"]
    assert sel.gate.rung == "pinned" and sel.gate.passed and not sel.degraded


def test_nothing_beyond_the_first_build_when_it_passes() -> None:
    ladder = Ladder({"full": 0.9})
    sel = _select(_spec(), ladder)
    assert ladder.order == ["full"] and sel.gate.rung == "full"


def test_status_names_the_rung_that_passed() -> None:
    """The worker's result carries the rung; the operator's status takes it as it is."""
    from edgequant.api.result import WorkerResult
    from edgequant.controller import status
    from tests.unit.controller.conftest import batch_job, pod

    results = api.Results(method=api.Method.TFLITE_INT8, rung="pinned", pinned_layers=["conv2", "conv3"])
    message = WorkerResult.for_exit(ExitCode.SUCCESS, "tflite-int8: 83,288 bytes, remedy rung pinned passed", results)
    job = batch_job(succeeded=1, conditions=[("Complete", "CompletionsReached", "")])
    obs = status.observe_job(job, [pod("p1", "Succeeded", exit_code=0, message=message.to_termination_message())])
    assert obs.results is not None and obs.results["rung"] == "pinned" and not obs.degraded
    assert "remedy rung pinned passed" in obs.message
