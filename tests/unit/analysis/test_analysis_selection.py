"""Mixed precision (manual, auto), the acceptance gate's fail path and the degrade ladder, over an injected build()."""

from __future__ import annotations

from typing import Any

import pytest

from edgequant.analysis.selection import Candidate, select_artifact
from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode

BASELINE_ACC = 0.90
BASELINE_SIZE = 400_000
# What keeping a layer in float buys (accuracy) and costs (bytes) on top of plain INT8.
GAIN = {"conv2": 0.05, "fc1": 0.004, "conv1": 0.002, "logits": 0.001}
COST = {"conv2": 20_000, "fc1": 150_000, "conv1": 1_000, "logits": 5_000}


def _spec(**overrides: Any) -> api.QuantizationJobSpec:
    doc: dict[str, Any] = {
        "model": {"uri": "file:///m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "method": "tflite-int8",
        "calibration": {"dataset": {"uri": "file:///cal/"}},
        "evaluation": {"dataset": {"uri": "file:///eval/"}},
        "output": {"uri": "file:///out/"},
    }
    doc.update(overrides)
    return api.QuantizationJobSpec.model_validate(doc)


class Builder:
    """Scores candidates from the tables above and records every build, as the worker's build() would."""

    def __init__(self, *, int8_acc: float = 0.84, fp16_acc: float = 0.899) -> None:
        self.int8_acc, self.fp16_acc = int8_acc, fp16_acc
        self.calls: list[tuple[api.Method, tuple[str, ...]]] = []
        self.rungs: list[str] = []

    def __call__(self, rung: str, method: api.Method, pins: tuple[str, ...]) -> Candidate:
        self.calls.append((method, pins))
        self.rungs.append(rung)
        if rung == "float16":
            return Candidate(
                method=method, pinned=(), accuracy=self.fp16_acc, size_bytes=BASELINE_SIZE // 2, artifact="fp16"
            )
        acc = self.int8_acc + sum(GAIN[p] for p in pins)
        size = 100_000 + sum(COST[p] for p in pins)
        return Candidate(method=method, pinned=pins, accuracy=acc, size_bytes=size, artifact=("int8", pins))


RANKING = ["conv2", "fc1", "conv1", "logits"]


def _select(spec: api.QuantizationJobSpec, build: Builder, **kw: Any):
    args: dict[str, Any] = dict(
        spec=spec,
        baseline_accuracy=BASELINE_ACC,
        baseline_size=BASELINE_SIZE,
        build=build,
        ranking=lambda: RANKING,
        pinnable=True,
        fallback_method=api.Method.TFLITE_FLOAT16,
    )
    args.update(kw)
    return select_artifact(**args)


def test_plain_int8_within_budget_builds_once_and_pins_nothing() -> None:
    build = Builder(int8_acc=0.895)
    sel = _select(_spec(mixedPrecision={"mode": "auto"}), build)
    assert build.calls == [(api.Method.TFLITE_INT8, ())]
    assert sel.exit_code is ExitCode.SUCCESS and sel.gate.passed and not sel.degraded
    assert sel.mixed_precision.pinned == [] and sel.gate.trials[0].chosen


def test_auto_meets_a_budget_plain_int8_misses_by_pinning_the_most_sensitive() -> None:
    build = Builder()
    spec = _spec(mixedPrecision={"mode": "auto"}, acceptance={"maxAccuracyDrop": 0.02})
    sel = _select(spec, build)
    assert build.calls == [(api.Method.TFLITE_INT8, ()), (api.Method.TFLITE_INT8, ("conv2",))]
    assert not sel.gate.trials[0].passed and sel.gate.trials[1].passed
    assert sel.exit_code is ExitCode.SUCCESS and not sel.degraded
    assert sel.chosen.pinned == ("conv2",) and sel.mixed_precision.met_accuracy_budget is True
    assert sel.mixed_precision.accuracy == pytest.approx(0.89) and sel.mixed_precision.size_bytes == 120_000


def test_auto_stops_at_max_pinned_layers_and_fails_with_reasons() -> None:
    build = Builder(int8_acc=0.80)
    spec = _spec(mixedPrecision={"mode": "auto", "maxPinnedLayers": 2}, acceptance={"maxAccuracyDrop": 0.01})
    sel = _select(spec, build)
    assert [pins for _m, pins in build.calls] == [(), ("conv2",), ("conv2", "fc1")]
    assert sel.exit_code is ExitCode.ACCEPTANCE_FAILED and not sel.gate.passed
    assert "maxPinnedLayers (2)" in sel.mixed_precision.note
    assert "acceptance.maxAccuracyDrop" in sel.message and "onFailure: fail" in sel.message
    # the best found is the most accurate one
    assert sel.chosen.pinned == ("conv2", "fc1")


def test_manual_keeps_pinned_layers_and_does_not_search() -> None:
    build = Builder()
    spec = _spec(mixedPrecision={"mode": "manual", "pinnedLayers": ["fc1"]}, acceptance={"maxAccuracyDrop": 0.02})
    sel = _select(spec, build)
    assert build.calls == [(api.Method.TFLITE_INT8, ("fc1",))]
    assert sel.exit_code is ExitCode.ACCEPTANCE_FAILED and sel.gate.trials[0].rung == "pinned"


def test_gate_fail_path_reports_why_and_the_exit_code() -> None:
    sel = _select(_spec(acceptance={"maxAccuracyDrop": 0.01, "minCompressionRatio": 5.0}), Builder())
    assert sel.exit_code is ExitCode.ACCEPTANCE_FAILED
    assert len(sel.gate.reasons) == 2
    assert any("minCompressionRatio" in r for r in sel.gate.reasons)
    assert sel.gate.on_failure is api.OnFailure.FAIL and not sel.degraded


def test_degrade_walks_int8_then_pinned_then_float16_and_publishes_the_first_pass() -> None:
    build = Builder(int8_acc=0.70, fp16_acc=0.899)
    spec = _spec(acceptance={"maxAccuracyDrop": 0.01, "onFailure": "degrade"}, mixedPrecision={"maxPinnedLayers": 2})
    sel = _select(spec, build)
    assert [t.rung for t in sel.gate.trials] == ["full", "pinned", "pinned", "float16"]
    assert sel.chosen.artifact == "fp16" and sel.gate.passed and sel.degraded
    assert sel.exit_code is ExitCode.SUCCESS and "degraded" in sel.message
    # mode off but the ladder searched: reported as an auto search
    assert sel.mixed_precision.mode is api.MixedPrecisionMode.AUTO


def test_degrade_stops_at_the_pinned_rung_when_it_passes() -> None:
    build = Builder()
    spec = _spec(acceptance={"maxAccuracyDrop": 0.02, "onFailure": "degrade"})
    sel = _select(spec, build)
    assert [t.rung for t in sel.gate.trials] == ["full", "pinned"]
    assert sel.chosen.pinned == ("conv2",) and sel.degraded  # fell back from full INT8
    assert api.Method.TFLITE_FLOAT16 not in [m for m, _p in build.calls]


def test_degrade_never_ends_with_nothing_and_flags_the_best_found() -> None:
    build = Builder(int8_acc=0.5, fp16_acc=0.85)
    spec = _spec(acceptance={"maxAccuracyDrop": 0.01, "onFailure": "degrade"}, mixedPrecision={"maxPinnedLayers": 1})
    sel = _select(spec, build)
    assert not any(t.passed for t in sel.gate.trials)
    assert sel.exit_code is ExitCode.SUCCESS and sel.degraded and not sel.gate.passed
    assert sel.chosen.artifact == "fp16"  # smallest accuracy drop among equally failing candidates
    assert sum(t.chosen for t in sel.gate.trials) == 1
    assert "best found" in sel.message


def test_ladder_skips_rungs_that_cannot_help() -> None:
    # only the size budget fails: pinning and float16 only buy accuracy, so neither is built
    build = Builder(int8_acc=0.899)
    spec = _spec(acceptance={"minCompressionRatio": 10.0, "onFailure": "degrade"}, mixedPrecision={"mode": "auto"})
    sel = _select(spec, build)
    assert len(build.calls) == 1 and sel.degraded and not sel.gate.passed
    # not pinnable (e.g. dynamic range): straight to float16, with a note
    build = Builder(int8_acc=0.5)
    spec = _spec(
        method="tflite-dynamic-range",
        calibration=None,
        acceptance={"onFailure": "degrade"},
        mixedPrecision={"mode": "auto"},
    )
    sel = _select(spec, build, pinnable=False)
    assert [m for m, _p in build.calls] == [api.Method.TFLITE_DYNAMIC_RANGE, api.Method.TFLITE_FLOAT16]
    assert "cannot keep layers in float" in sel.mixed_precision.note


def test_ranking_is_computed_only_when_a_search_needs_it() -> None:
    asked: list[int] = []

    def ranking() -> list[str]:
        asked.append(1)
        return RANKING

    _select(_spec(mixedPrecision={"mode": "auto"}), Builder(int8_acc=0.899), ranking=ranking)
    assert asked == []
    _select(_spec(mixedPrecision={"mode": "auto"}, acceptance={"maxAccuracyDrop": 0.02}), Builder(), ranking=ranking)
    assert asked == [1]


def test_report_sections_serialise_camel_case() -> None:
    sel = _select(_spec(mixedPrecision={"mode": "auto"}, acceptance={"maxAccuracyDrop": 0.02}), Builder())
    gate = sel.gate.to_wire()
    assert gate["trials"][1]["pinned"] == ["conv2"] and gate["trials"][1]["chosen"] is True
    assert {"accuracyDrop", "compressionRatio", "maxAccuracyDrop", "onFailure"} <= set(gate)
    assert sel.mixed_precision.to_wire()["metAccuracyBudget"] is True


def test_a_family_without_a_float16_method_gets_its_own_model_in_float16_as_the_last_rung() -> None:
    """onnx-static's float16 rung is the spec's method converted to float16 (the backend's Float16Export)."""
    build = Builder(int8_acc=0.70, fp16_acc=0.899)
    spec = _spec(
        method="onnx-static",
        model={"uri": "file:///m.onnx", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        acceptance={"maxAccuracyDrop": 0.01, "onFailure": "degrade"},
        mixedPrecision={"maxPinnedLayers": 1},
    )
    sel = _select(spec, build, fallback_method=api.Method.ONNX_STATIC)
    assert build.rungs == ["full", "pinned", "float16"]
    assert [m for m, _p in build.calls] == [api.Method.ONNX_STATIC] * 3
    assert sel.chosen.artifact == "fp16" and sel.gate.passed and sel.degraded
    assert sel.gate.trials[-1].rung == "float16" and sel.gate.trials[-1].chosen
    # without the rung the ladder ends at pinned layers and publishes the best found, flagged
    build = Builder(int8_acc=0.70)
    sel = _select(spec, build, fallback_method=None)
    assert build.rungs == ["full", "pinned"] and sel.degraded and not sel.gate.passed


# Unlabeled evaluation data: no accuracy, only agreement with FP32 and output SQNR.
AGREE_GAIN = {"conv2": 0.15, "fc1": 0.01, "conv1": 0.005, "logits": 0.002}


class AgreementBuilder(Builder):
    """Candidates scored only by agreement / SQNR, as on unlabeled data."""

    def __init__(self, *, int8_agree: float = 0.74, fp16_agree: float = 0.995) -> None:
        super().__init__()
        self.int8_agree, self.fp16_agree = int8_agree, fp16_agree

    def __call__(self, rung: str, method: api.Method, pins: tuple[str, ...]) -> Candidate:
        cand = super().__call__(rung, method, pins)
        agree = self.fp16_agree if rung == "float16" else self.int8_agree + sum(AGREE_GAIN[p] for p in pins)
        sqnr = 45.0 if rung == "float16" else 10.0 + 40 * (agree - self.int8_agree)
        return Candidate(
            method=method,
            pinned=pins,
            accuracy=None,
            size_bytes=cand.size_bytes,
            artifact=cand.artifact,
            agreement=agree,
            sqnr_db=sqnr,
        )


def test_unlabeled_auto_pins_until_min_agreement_is_met() -> None:
    build = AgreementBuilder()
    spec = _spec(mixedPrecision={"mode": "auto"}, acceptance={"minAgreement": 0.88})
    sel = _select(spec, build, baseline_accuracy=None)
    assert build.calls == [(api.Method.TFLITE_INT8, ()), (api.Method.TFLITE_INT8, ("conv2",))]
    assert sel.exit_code is ExitCode.SUCCESS and sel.chosen.pinned == ("conv2",)
    assert sel.gate.agreement == pytest.approx(0.89) and sel.gate.min_agreement == 0.88
    assert sel.gate.accuracy_drop is None and sel.gate.accuracy_budget_applied is False
    assert (
        sel.gate.trials[0].agreement == pytest.approx(0.74)
        and "acceptance.minAgreement" in sel.gate.trials[0].reasons[0]
    )
    assert sel.mixed_precision.met_accuracy_budget is True


def test_unlabeled_without_a_fidelity_budget_builds_once() -> None:
    """The default maxAccuracyDrop cannot apply without labels, and nothing else asks for fidelity."""
    build = AgreementBuilder()
    sel = _select(
        _spec(mixedPrecision={"mode": "auto"}, acceptance={"onFailure": "degrade"}), build, baseline_accuracy=None
    )
    assert build.rungs == ["full"] and sel.gate.passed and not sel.degraded


def test_degrade_ladder_driven_by_agreement_ends_at_float16() -> None:
    build = AgreementBuilder()
    spec = _spec(mixedPrecision={"maxPinnedLayers": 2}, acceptance={"minAgreement": 0.99, "onFailure": "degrade"})
    sel = _select(spec, build, baseline_accuracy=None)
    assert build.rungs == ["full", "pinned", "pinned", "float16"]
    assert sel.chosen.method is api.Method.TFLITE_FLOAT16 and sel.gate.passed and sel.degraded
    assert sel.mixed_precision.note == "stopped at mixedPrecision.maxPinnedLayers (2)"


def test_sqnr_budget_drives_the_search_like_agreement() -> None:
    build = AgreementBuilder()
    sel = _select(_spec(mixedPrecision={"mode": "auto"}, acceptance={"minSqnrDb": 15}), build, baseline_accuracy=None)
    assert build.rungs == ["full", "pinned"] and sel.gate.passed and sel.gate.sqnr_db == pytest.approx(16.0)


def test_labels_and_agreement_together_must_both_be_met() -> None:
    """Accuracy alone is met by pinning conv2 (0.89 vs 0.90); agreement 0.95 needs conv2 and fc1."""

    class Both(AgreementBuilder):
        def __call__(self, rung: str, method: api.Method, pins: tuple[str, ...]) -> Candidate:
            cand = super().__call__(rung, method, pins)
            acc = self.int8_acc + sum(GAIN[p] for p in pins)
            return Candidate(
                method=method,
                pinned=pins,
                accuracy=acc,
                size_bytes=cand.size_bytes,
                artifact=cand.artifact,
                agreement=cand.agreement + 0.06,
            )

    build = Both()
    sel = _select(
        _spec(mixedPrecision={"mode": "auto"}, acceptance={"maxAccuracyDrop": 0.02, "minAgreement": 0.96}), build
    )
    assert [pins for _m, pins in build.calls] == [(), ("conv2",), ("conv2", "fc1")]
    assert sel.gate.passed and sel.chosen.pinned == ("conv2", "fc1") and sel.gate.accuracy_budget_applied


def test_best_found_prefers_higher_agreement_when_none_passes() -> None:
    build = AgreementBuilder(fp16_agree=0.90)
    spec = _spec(mixedPrecision={"maxPinnedLayers": 1}, acceptance={"minAgreement": 0.999, "onFailure": "degrade"})
    sel = _select(spec, build, baseline_accuracy=None)
    assert build.rungs == ["full", "pinned", "float16"] and not sel.gate.passed and sel.degraded
    assert sel.chosen.method is api.Method.TFLITE_FLOAT16  # 0.90 beats the pinned rung's 0.89 and full INT8's 0.74
