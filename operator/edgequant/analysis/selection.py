"""Which artifact gets published: mixed precision (manual / auto), the acceptance gate and the degrade ladder.

Pure orchestration over an injected ``build(method, keep_float) -> Candidate``
that quantizes and scores one candidate; the worker supplies it, tests supply
real backends. Nothing here knows a framework.

The ladder (``acceptance.onFailure: degrade``; ``remedy`` adds the rungs of ``analysis.remedy`` around step 2):

1. full   - the spec's method, every layer quantized (manual pins when mode is manual);
2. pinned - the same method keeping the most sensitive layers in float, one more
   per step, until the fidelity budgets are met (``acceptance.maxAccuracyDrop``
   with labels, ``minAgreement`` / ``minSqnrDb`` with or without) or
   ``mixedPrecision.maxPinnedLayers`` are pinned (this is also auto mode);
3. float16 - the family's float16 method.

It stops at the first candidate that passes the whole gate. When none passes it
publishes the best one found, flagged degraded: fewest gate reasons, then the
smallest accuracy drop, the highest agreement and SQNR, then the best
compression. It never ends with nothing. A rung that cannot help is skipped:
pinning and float16 only buy fidelity, so they are not tried when every
fidelity budget is already met.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgequant.analysis.gate import GateVerdict, check_acceptance, gate_report
from edgequant.analysis.remedy import RemedyPlan, RemedyStep
from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode
from edgequant.report.schema import GateReport, MixedPrecisionReport, Trial


@dataclass(frozen=True)
class Candidate:
    """A built and scored quantized model. ``artifact`` is the worker's handle, opaque here."""

    method: api.Method
    pinned: tuple[str, ...]
    accuracy: float | None
    size_bytes: int
    artifact: object = None
    agreement: float | None = None
    """Share of evaluation samples whose top-1 class matches FP32's."""
    sqnr_db: float | None = None
    """SQNR of its outputs against FP32's over the evaluation set."""


Build = Callable[[str, api.Method, tuple[str, ...]], Candidate]
"""build(rung, method, keep_float): rung is full, pinned or float16."""


@dataclass
class Selection:
    """The candidate to publish and everything the report says about how it was chosen."""

    chosen: Candidate
    verdict: GateVerdict
    """The gate's verdict on ``chosen``."""
    gate: GateReport
    mixed_precision: MixedPrecisionReport
    exit_code: ExitCode
    message: str
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        return self.gate.degraded


def select_artifact(
    *,
    spec: api.QuantizationJobSpec,
    baseline_accuracy: float | None,
    baseline_size: int,
    build: Build,
    ranking: Callable[[], Sequence[str]] | None,
    pinnable: bool,
    fallback_method: api.Method | None,
    log: Callable[[str], None] = lambda _msg: None,
    remedy: RemedyPlan | None = None,
    build_step: Callable[[RemedyStep], Candidate] | None = None,
) -> Selection:
    """Build candidates in ladder order and pick the one to publish (see the module docstring).

    ``ranking`` returns layer names, most sensitive first; it is called only when
    a search needs it. ``pinnable`` says whether the method can keep layers in
    float. ``fallback_method`` is the float16 rung's method (None: no such rung; the spec's own method: the
    backend converts the model to float16). With onFailure remedy, ``remedy`` lists the steps around the
    pinning search (``analysis.remedy``) and ``build_step`` builds one.
    """
    mp, acceptance = spec.mixed_precision, spec.acceptance
    remedying = acceptance.on_failure is api.OnFailure.REMEDY and remedy is not None and build_step is not None
    degrade = acceptance.on_failure in (api.OnFailure.DEGRADE, api.OnFailure.REMEDY)
    trials: list[Trial] = []
    candidates: list[Candidate] = []
    verdicts: list[GateVerdict] = []

    def attempt(rung: str, method: api.Method, pins: tuple[str, ...], step: RemedyStep | None = None) -> GateVerdict:
        cand = build_step(step) if step is not None and build_step is not None else build(rung, method, pins)
        verdict = check_acceptance(
            acceptance=acceptance,
            baseline_accuracy=baseline_accuracy,
            quantized_accuracy=cand.accuracy,
            baseline_size=baseline_size,
            quantized_size=cand.size_bytes,
            agreement=cand.agreement,
            sqnr_db=cand.sqnr_db,
        )
        log(
            f"{rung}: {method.value}"
            + (" with " + ", ".join(f"{k} {v}" for k, v in step.changes.items()) if step is not None else "")
            + (f" keeping {len(pins)} layer(s) in float" if pins else "")
            + f" -> accuracy {_fmt(cand.accuracy)}, agreement {_fmt(cand.agreement)}, "
            + (f"SQNR {cand.sqnr_db:.1f} dB, " if cand.sqnr_db is not None else "")
            + f"{cand.size_bytes} bytes, "
            + ("passes the gate" if verdict.passed else "misses: " + "; ".join(verdict.reasons))
        )
        candidates.append(cand)
        verdicts.append(verdict)
        trials.append(
            Trial(
                rung=rung,
                method=method,
                changes=dict(step.changes) if step is not None else {},
                pinned=list(pins),
                accuracy=cand.accuracy,
                size_bytes=cand.size_bytes,
                accuracy_drop=verdict.accuracy_drop,
                compression_ratio=verdict.compression_ratio,
                agreement=cand.agreement,
                sqnr_db=cand.sqnr_db,
                passed=verdict.passed,
                reasons=list(verdict.reasons),
            )
        )
        return verdict

    def fidelity_met(verdict: GateVerdict) -> bool:
        """Every fidelity budget that applies is met (what pinning and float16 can buy)."""
        return verdict.fidelity_met

    manual_pins = tuple(mp.pinned_layers) if mp.mode is api.MixedPrecisionMode.MANUAL and pinnable else ()
    verdict = attempt("pinned" if manual_pins else "full", spec.method, manual_pins)
    note = ""
    if mp.mode is api.MixedPrecisionMode.MANUAL and not pinnable:
        note = f"{spec.method.value} cannot keep layers in float; pinnedLayers ignored"

    if remedying:
        assert remedy is not None
        for step in remedy.before_pinning:
            if any(v.passed for v in verdicts):
                break
            attempt(step.rung, step.method, manual_pins if step.method is spec.method else (), step)
        if any(v.passed for v in verdicts):
            verdict = next(v for v in verdicts if v.passed)

    searched = False
    if not verdict.passed and not fidelity_met(verdict) and (mp.mode is api.MixedPrecisionMode.AUTO or degrade):
        if not pinnable:
            note = note or f"{spec.method.value} cannot keep layers in float; no pinning search"
        elif candidates[0].accuracy is None and candidates[0].agreement is None and candidates[0].sqnr_db is None:
            note = "no evaluation data: pinning cannot be steered by accuracy, agreement or SQNR"
        elif ranking is None:
            note = "no sensitivity ranking available: no pinning search"
        else:
            searched = True
            order = [layer for layer in ranking() if layer not in manual_pins]
            pins = manual_pins
            for layer in order:
                if len(pins) >= mp.max_pinned_layers:
                    note = f"stopped at mixedPrecision.maxPinnedLayers ({mp.max_pinned_layers})"
                    break
                pins = (*pins, layer)
                verdict = attempt("pinned", spec.method, pins)
                if fidelity_met(verdict):
                    break
            else:
                if not fidelity_met(verdict):
                    note = (
                        "pinned every ranked layer without meeting the fidelity budget ("
                        + _fidelity_fields(acceptance, baseline_accuracy)
                        + ")"
                    )

    if remedying:
        assert remedy is not None
        for step in remedy.after_pinning:
            if any(v.passed for v in verdicts):
                break
            attempt(step.rung, step.method, (), step)

    if (
        degrade
        and not any(v.passed for v in verdicts)
        and not any(fidelity_met(v) for v in verdicts)
        and fallback_method is not None
    ):
        attempt("float16", fallback_method, ())

    passing = [i for i, v in enumerate(verdicts) if v.passed]
    if passing:
        # Ladder order: the first that passes is the least fallen-back.
        index = passing[0]
    else:
        index = min(range(len(verdicts)), key=lambda i: _best_key(verdicts[i], i))
    trials[index] = trials[index].model_copy(update={"chosen": True})
    chosen, chosen_verdict = candidates[index], verdicts[index]
    # A remedy that passes (more samples, another algorithm, pinned layers, QAT) is the fix, not a fall-back;
    # float16 is a fall-back on either ladder, and so are pins the degrade ladder added to a spec that asked for none.
    fell_back = trials[index].rung == "float16" or (
        trials[index].rung == "pinned" and mp.mode is api.MixedPrecisionMode.OFF and not remedying
    )
    degraded = degrade and (not chosen_verdict.passed or fell_back)

    gate = gate_report(
        chosen_verdict,
        acceptance,
        accuracy_budget_applied=baseline_accuracy is not None,
        degraded=degraded,
        trials=trials,
        rung=trials[index].rung,
        skipped=list(remedy.skipped) if remedying and remedy is not None else [],
    )
    mixed = MixedPrecisionReport(
        mode=api.MixedPrecisionMode.AUTO if searched and mp.mode is api.MixedPrecisionMode.OFF else mp.mode,
        pinned=list(chosen.pinned),
        max_pinned_layers=mp.max_pinned_layers,
        met_accuracy_budget=fidelity_met(chosen_verdict) if searched else None,
        accuracy=chosen.accuracy if chosen.pinned else None,
        size_bytes=chosen.size_bytes if chosen.pinned else None,
        note=note,
    )
    if chosen_verdict.passed:
        code = ExitCode.SUCCESS
        message = (
            f"published {trials[index].rung} ({chosen.method.value})"
            + (f" keeping {len(chosen.pinned)} layer(s) in float" if chosen.pinned else "")
            + (", degraded down the ladder" if degraded else "")
        )
    elif degrade:
        code = ExitCode.SUCCESS
        message = (
            f"no candidate met the budget; published the best found, {trials[index].rung} ({chosen.method.value}), "
            f"flagged degraded: " + "; ".join(chosen_verdict.reasons)
        )
    else:
        code = ExitCode.ACCEPTANCE_FAILED
        message = "acceptance gate failed (onFailure: fail): " + "; ".join(chosen_verdict.reasons)
    return Selection(
        chosen=chosen,
        verdict=chosen_verdict,
        gate=gate,
        mixed_precision=mixed,
        exit_code=code,
        message=message,
        candidates=candidates,
    )


def _best_key(verdict: GateVerdict, index: int) -> tuple[int, float, float, float, float, int]:
    """Smaller is better: fewest gate reasons, smallest accuracy drop, highest agreement and SQNR, best compression, earliest rung."""
    drop = verdict.accuracy_drop if verdict.accuracy_drop is not None else 0.0
    agreement = verdict.agreement if verdict.agreement is not None else 0.0
    sqnr = verdict.sqnr_db if verdict.sqnr_db is not None else 0.0
    ratio = verdict.compression_ratio or 0.0
    return (len(verdict.reasons), drop, -agreement, -sqnr, -ratio, index)


def _fidelity_fields(acceptance: api.Acceptance, baseline_accuracy: float | None) -> str:
    """The fidelity budgets that apply, by spec field."""
    fields = ["acceptance.maxAccuracyDrop"] if baseline_accuracy is not None else []
    if acceptance.min_agreement is not None:
        fields.append("acceptance.minAgreement")
    if acceptance.min_sqnr_db is not None:
        fields.append("acceptance.minSqnrDb")
    return ", ".join(fields) or "none set"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
