"""The acceptance gate's fidelity budgets (accuracy, agreement, SQNR) and the chance-level labels check. Pure."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgequant.analysis.gate import chance_check, check_acceptance
from edgequant.api import v1alpha1 as api


def _acceptance(**kw: Any) -> api.Acceptance:
    return api.Acceptance.model_validate(kw)


def _check(acceptance: api.Acceptance, **kw: Any):
    args: dict[str, Any] = dict(baseline_accuracy=None, quantized_accuracy=None, baseline_size=400, quantized_size=100)
    args.update(kw)
    return check_acceptance(acceptance=acceptance, **args)


def test_agreement_budget_applies_without_labels_and_names_the_field() -> None:
    budget = _acceptance(minAgreement=0.95)
    ok = _check(budget, agreement=0.97)
    assert ok.passed and ok.fidelity_met and ok.accuracy_drop is None and ok.agreement == 0.97
    low = _check(budget, agreement=0.74)
    assert not low.passed and not low.fidelity_met
    assert (
        "acceptance.minAgreement 0.9500" in low.reasons[0]
        and "26.00% of the evaluation samples changed class" in low.reasons[0]
    )


def test_sqnr_budget_and_an_unmeasurable_budget_fail() -> None:
    budget = _acceptance(minSqnrDb=25)
    assert _check(budget, sqnr_db=31.2).passed
    low = _check(budget, sqnr_db=12.0)
    assert not low.fidelity_met and "acceptance.minSqnrDb 25.0 dB" in low.reasons[0]
    unmeasured = _check(_acceptance(minAgreement=0.9, minSqnrDb=20))
    assert (
        not unmeasured.passed
        and len(unmeasured.reasons) == 2
        and all("could not be measured" in r for r in unmeasured.reasons)
    )


def test_all_given_budgets_apply_together_and_size_is_not_fidelity() -> None:
    budget = _acceptance(maxAccuracyDrop=0.01, minAgreement=0.99, minCompressionRatio=5)
    verdict = _check(budget, baseline_accuracy=0.90, quantized_accuracy=0.90, agreement=0.80, sqnr_db=20.0)
    # "drop +0.0000" but a fifth of the classes flipped: the agreement budget catches it
    assert verdict.accuracy_drop == 0.0 and not verdict.fidelity_met
    assert [r.split(" ")[0] for r in verdict.reasons] == ["top-1", "compression"]
    size_only = _check(budget, baseline_accuracy=0.90, quantized_accuracy=0.90, agreement=0.995)
    assert not size_only.passed and size_only.fidelity_met


def test_labels_of_the_models_classes_are_far_above_chance() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 100)
    predictions = np.where(rng.random(1000) < 0.85, labels, rng.integers(0, 10, 1000))
    check = chance_check(predictions, labels, outputs=10)
    assert check is not None and not check.fired
    assert check.chance == pytest.approx(0.1, abs=0.01)


@pytest.mark.parametrize("shift", [1, 3])
def test_shifted_labels_are_no_better_than_chance(shift: int) -> None:
    """The same accurate predictions scored against labels shifted by one class: accuracy ~0, below 1/K."""
    rng = np.random.default_rng(1)
    truth = np.repeat(np.arange(10), 100)
    predictions = np.where(rng.random(1000) < 0.85, truth, rng.integers(0, 10, 1000))
    check = chance_check(predictions, (truth + shift) % 10, outputs=10)
    assert check is not None and check.fired and check.accuracy < check.chance
    text = check.message()
    assert (
        "labels do not match the model's classes" in text
        and "acceptance.minAgreement" in text
        and "dataset.labels: none" in text
    )


def test_labels_outside_the_outputs_fire_and_degenerate_inputs_are_not_judged() -> None:
    labels = np.array([0, 1, 12, 3] * 10)
    check = chance_check(labels.copy(), labels, outputs=10)
    assert (
        check is not None
        and check.fired
        and check.out_of_range == 10
        and "not an index of the model's 10 outputs" in check.message()
    )
    assert chance_check(np.zeros(0), np.zeros(0), outputs=10) is None
    assert chance_check(np.zeros(5), np.zeros(5), outputs=1) is None
