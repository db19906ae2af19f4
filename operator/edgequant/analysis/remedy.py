"""The remedy ladder (``acceptance.onFailure: remedy``): which spec changes to try, in the troubleshooting order.

While the budget is missed, after the spec's own candidate:

1. more-samples          - calibrate on more samples (up to what the dataset holds, at most ``MAX_SAMPLES``);
2. calibration-algorithm - the other range estimators the method's calibrator has (minmax, entropy, percentile);
3. pinned                - the most sensitive layers kept in float, one more per step (the degrade ladder's search);
4. qat                   - the family's quantization-aware-training method, when training data is given;
5. float16               - the family's float16 method (or the model converted to float16).

``plan_remedies`` is pure: it lists the steps 1, 2 and 4 that apply with the spec changes each makes (pinned
and float16 are the degrade ladder's, run by ``selection``); a step that cannot change anything is left out
with the reason, so the report says why a rung was not tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgequant.api import v1alpha1 as api

#: Most calibration samples the remedy asks for (the reference: 500-1000 representative samples suffice).
MAX_SAMPLES = 1000

#: The rungs in order; pinned and float16 are built by the degrade ladder in ``selection``.
RUNGS = ("full", "more-samples", "calibration-algorithm", "pinned", "qat", "float16")


@dataclass(frozen=True)
class RemedyStep:
    rung: str
    method: api.Method
    spec: api.QuantizationJobSpec
    """The spec this step quantizes with."""
    changes: dict[str, str] = field(default_factory=dict)
    """Spec path -> the value this step sets, for the report."""


@dataclass(frozen=True)
class RemedyPlan:
    before_pinning: tuple[RemedyStep, ...]
    after_pinning: tuple[RemedyStep, ...]
    skipped: tuple[str, ...]
    """Rungs not tried, each with why."""


def _with_calibration(spec: api.QuantizationJobSpec, **update: Any) -> api.QuantizationJobSpec:
    assert spec.calibration is not None
    return spec.model_copy(update={"calibration": spec.calibration.model_copy(update=update)})


def plan_remedies(
    spec: api.QuantizationJobSpec, *, calibration_available: int | None, calibration_used: int | None
) -> RemedyPlan:
    """The remedy steps for ``spec`` around the pinning search, in ladder order."""
    method, calibration = spec.method, spec.calibration
    before: list[RemedyStep] = []
    after: list[RemedyStep] = []
    skipped: list[str] = []
    if not method.needs_calibration or calibration is None:
        skipped.append(f"more-samples, calibration-algorithm: {method.value} does not calibrate")
    else:
        used = calibration_used if calibration_used is not None else calibration.samples
        ceiling = min(calibration_available if calibration_available is not None else MAX_SAMPLES, MAX_SAMPLES)
        if ceiling > used:
            more = _with_calibration(spec, samples=ceiling, min_samples=min(calibration.min_samples, ceiling))
            before.append(RemedyStep("more-samples", method, more, {"spec.calibration.samples": str(ceiling)}))
        else:
            skipped.append(
                f"more-samples: calibration already uses {used} samples (the dataset holds {calibration_available}, the remedy stops at {MAX_SAMPLES})"
            )
        algorithms = tuple(api.CalibrationAlgorithm(a) for a in method.row.calibration_algorithms)
        chosen_by_ptq = (
            method is api.Method.ONNX_STATIC
            and spec.ptq.select_algorithm
            and "algorithm" not in calibration.model_fields_set
        )
        if not algorithms:
            skipped.append(f"calibration-algorithm: {method.value} calibrates with min/max only")
        elif chosen_by_ptq:
            skipped.append(
                "calibration-algorithm: ptq.selectAlgorithm already chose among minmax, entropy and percentile"
            )
        else:
            base = before[-1].spec if before else spec
            for algorithm in algorithms:
                if algorithm is calibration.algorithm:
                    continue
                changed = _with_calibration(base, algorithm=algorithm)
                if method is api.Method.ONNX_STATIC:
                    changed = changed.model_copy(
                        update={"ptq": changed.ptq.model_copy(update={"select_algorithm": False})}
                    )
                changes = {"spec.calibration.algorithm": algorithm.value, **(before[-1].changes if before else {})}
                before.append(RemedyStep("calibration-algorithm", method, changed, changes))
    qat = [  # a QAT method of the same backend (the run's backend builds every rung) that takes this model
        m
        for m in api.Method
        if m.row.backend == method.row.backend
        and m.needs_training
        and m is not method
        and (spec.model.resolved_format is None or spec.model.resolved_format in m.formats)
    ]
    if method.needs_training:
        skipped.append(f"qat: {method.value} already trains")
    elif not qat:
        skipped.append(f"qat: {method.value}'s backend has no QAT method for this model format")
    elif spec.training is None:
        skipped.append(f"qat: {qat[0].value} needs training data (add spec.training)")
    else:
        after.append(
            RemedyStep("qat", qat[0], spec.model_copy(update={"method": qat[0]}), {"spec.method": qat[0].value})
        )
    return RemedyPlan(before_pinning=tuple(before), after_pinning=tuple(after), skipped=tuple(skipped))
