"""The acceptance gate: does a quantized model meet the spec's budget? Pure, no I/O.

Fidelity has three budgets, any subset of which may apply: the accuracy drop
(needs labels), top-1 agreement with FP32 and output SQNR against FP32 (need
no labels). Pinning layers and the float16 rung buy fidelity, never size, so
the ladder asks ``GateVerdict.fidelity_met``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.report.schema import GateReport, Trial

_EPS = 1e-12
#: Standard errors above chance an FP32 accuracy must reach to count as better than chance.
CHANCE_SIGMAS = 3.0


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    """Why it failed, one sentence each, naming the spec field and the numbers."""
    accuracy_drop: float | None = None
    compression_ratio: float | None = None
    agreement: float | None = None
    sqnr_db: float | None = None
    fidelity_met: bool = True
    """Every fidelity budget (accuracy drop, agreement, SQNR) that could be measured is met."""


def check_acceptance(
    *,
    acceptance: api.Acceptance,
    baseline_accuracy: float | None,
    quantized_accuracy: float | None,
    baseline_size: int,
    quantized_size: int,
    agreement: float | None = None,
    sqnr_db: float | None = None,
) -> GateVerdict:
    """Compare the measured fidelity and compression ratio with the budget.

    Without accuracies (no evaluation data, or unlabeled data) the accuracy
    budget is not applied; minAgreement / minSqnrDb apply whenever set (a
    budget that was set but could not be measured fails, naming why).
    """
    reasons: list[str] = []
    fidelity_met = True
    ratio = baseline_size / quantized_size if quantized_size > 0 else 0.0
    drop: float | None = None
    if baseline_accuracy is not None and quantized_accuracy is not None:
        drop = baseline_accuracy - quantized_accuracy
        if drop > acceptance.max_accuracy_drop + _EPS:
            fidelity_met = False
            reasons.append(
                f"accuracy dropped {drop:.4f} ({baseline_accuracy:.4f} -> {quantized_accuracy:.4f}), "
                f"more than acceptance.maxAccuracyDrop {acceptance.max_accuracy_drop:.4f}"
            )
    if acceptance.min_agreement is not None:
        if agreement is None:
            fidelity_met = False
            reasons.append(
                "top-1 agreement with FP32 could not be measured (no evaluation outputs), so acceptance.minAgreement is not met"
            )
        elif agreement + _EPS < acceptance.min_agreement:
            fidelity_met = False
            reasons.append(
                f"top-1 agreement with FP32 {agreement:.4f} is below acceptance.minAgreement {acceptance.min_agreement:.4f} "
                f"({1 - agreement:.2%} of the evaluation samples changed class)"
            )
    if acceptance.min_sqnr_db is not None:
        if sqnr_db is None:
            fidelity_met = False
            reasons.append(
                "output SQNR against FP32 could not be measured (no evaluation outputs), so acceptance.minSqnrDb is not met"
            )
        elif sqnr_db + _EPS < acceptance.min_sqnr_db:
            fidelity_met = False
            reasons.append(
                f"output SQNR against FP32 {sqnr_db:.1f} dB is below acceptance.minSqnrDb {acceptance.min_sqnr_db:.1f} dB"
            )
    if ratio + _EPS < acceptance.min_compression_ratio:
        reasons.append(
            f"compression ratio {ratio:.2f}x is below acceptance.minCompressionRatio {acceptance.min_compression_ratio:.2f}x"
        )
    return GateVerdict(
        passed=not reasons,
        reasons=reasons,
        accuracy_drop=drop,
        compression_ratio=ratio,
        agreement=agreement,
        sqnr_db=sqnr_db,
        fidelity_met=fidelity_met,
    )


@dataclass(frozen=True)
class ChanceCheck:
    """FP32's top-1 accuracy against what predictions unrelated to the labels would score."""

    accuracy: float
    chance: float
    """Expected accuracy if predictions and labels were independent: sum over classes of P(pred=c) * P(label=c)."""
    threshold: float
    """chance + CHANCE_SIGMAS binomial standard errors on this many samples."""
    samples: int
    outputs: int
    out_of_range: int
    """Labels that are not an index of the model's outputs at all."""

    @property
    def fired(self) -> bool:
        return self.out_of_range > 0 or self.accuracy <= self.threshold

    def message(self) -> str:
        why = (
            f"{self.out_of_range} of {self.samples} label(s) are not an index of the model's {self.outputs} outputs; "
            if self.out_of_range
            else ""
        )
        return (
            f"{why}the FP32 model's top-1 accuracy {self.accuracy:.4f} on {self.samples} labeled samples is no better than "
            f"chance ({self.chance:.4f}; better than chance would be above {self.threshold:.4f}): the labels do not match "
            "the model's classes (or the inputs are not what the model was trained on, see diagnostics), so accuracy and "
            "acceptance.maxAccuracyDrop mean nothing here. Fix: labels must be the model's output class indices "
            "(imagefolder: name class folders with the index, e.g. 003_coat; npz: y holds indices); or drop the labels "
            "(dataset.labels: none) and budget fidelity with acceptance.minAgreement"
        )


def chance_check(predictions: np.ndarray, labels: np.ndarray, outputs: int) -> ChanceCheck | None:
    """Is FP32 top-1 no better than chance? None when it cannot be judged (no samples, fewer than 2 outputs).

    Chance is the accuracy predictions independent of the labels would have,
    from the observed class frequencies of both (1/K for balanced labels, any
    prediction spread); a model whose labels are its own classes scores far
    above it, one whose labels are permuted or shifted scores near or below it.
    """
    predictions, labels = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    n = int(labels.size)
    if n == 0 or outputs < 2 or predictions.size != n:
        return None
    accuracy = float((predictions == labels).mean())
    classes, label_counts = np.unique(labels, return_counts=True)
    pred_counts = np.array([(predictions == c).sum() for c in classes], dtype=np.float64)
    chance = float((pred_counts / n * label_counts / n).sum())
    # Chance of a model that ignores the labels can be 0 (it never predicts a labelled class); judge against 1/K then.
    p = max(chance, 1.0 / outputs)
    threshold = p + CHANCE_SIGMAS * math.sqrt(p * (1.0 - p) / n)
    out_of_range = int(((labels < 0) | (labels >= outputs)).sum())
    return ChanceCheck(
        accuracy=accuracy, chance=chance, threshold=threshold, samples=n, outputs=outputs, out_of_range=out_of_range
    )


def gate_report(
    verdict: GateVerdict,
    acceptance: api.Acceptance,
    *,
    accuracy_budget_applied: bool,
    degraded: bool,
    trials: list[Trial] | None = None,
    rung: str | None = None,
    skipped: list[str] | None = None,
) -> GateReport:
    """The report's gate section (report.json ``gate`` and ``analysis.gate``): the verdict, the budget it was
    checked against, and the ladder that led to it."""
    return GateReport(
        passed=verdict.passed,
        reasons=list(verdict.reasons),
        accuracy_drop=verdict.accuracy_drop,
        compression_ratio=verdict.compression_ratio,
        agreement=verdict.agreement,
        sqnr_db=verdict.sqnr_db,
        max_accuracy_drop=acceptance.max_accuracy_drop,
        accuracy_budget_applied=accuracy_budget_applied,
        min_agreement=acceptance.min_agreement,
        min_sqnr_db=acceptance.min_sqnr_db,
        min_compression_ratio=acceptance.min_compression_ratio,
        on_failure=acceptance.on_failure,
        degraded=degraded,
        trials=trials or [],
        rung=rung,
        skipped=skipped or [],
    )
