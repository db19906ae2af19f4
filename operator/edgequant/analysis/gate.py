"""The acceptance gate: does a quantized model meet the spec's budget? Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgequant.api import v1alpha1 as api


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    """Why it failed, one sentence each, naming the spec field and the numbers."""
    accuracy_drop: float | None = None
    compression_ratio: float | None = None


def check_acceptance(
    *,
    acceptance: api.Acceptance,
    baseline_accuracy: float | None,
    quantized_accuracy: float | None,
    baseline_size: int,
    quantized_size: int,
) -> GateVerdict:
    """Compare measured accuracy drop and compression ratio with the budget.

    Without accuracies (no evaluation data) only the size budget is checked.
    """
    reasons: list[str] = []
    ratio = baseline_size / quantized_size if quantized_size > 0 else 0.0
    drop: float | None = None
    if baseline_accuracy is not None and quantized_accuracy is not None:
        drop = baseline_accuracy - quantized_accuracy
        if drop > acceptance.max_accuracy_drop + 1e-12:
            reasons.append(
                f"accuracy dropped {drop:.4f} ({baseline_accuracy:.4f} -> {quantized_accuracy:.4f}), "
                f"more than acceptance.maxAccuracyDrop {acceptance.max_accuracy_drop:.4f}"
            )
    if ratio + 1e-12 < acceptance.min_compression_ratio:
        reasons.append(
            f"compression ratio {ratio:.2f}x is below acceptance.minCompressionRatio {acceptance.min_compression_ratio:.2f}x"
        )
    return GateVerdict(passed=not reasons, reasons=reasons, accuracy_drop=drop, compression_ratio=ratio)
