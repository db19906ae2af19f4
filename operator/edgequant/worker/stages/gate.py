"""Stage ``gate``: the acceptance budget. Fail the run, or publish flagged degraded when onFailure says so.

The select stage (``worker/stages/analysis.py``) usually judged already and left its verdict; this stage then
only acts on it. The verdict math is ``analysis/gate.py``.
"""

from __future__ import annotations

from edgequant.analysis.gate import check_acceptance
from edgequant.api import v1alpha1 as api
from edgequant.util.errors import AcceptanceError
from edgequant.worker.context import RunContext


def gate(ctx: RunContext) -> None:
    """The acceptance budget: fail, or publish flagged degraded when onFailure is degrade."""
    assert ctx.baseline is not None and ctx.quantized is not None
    if ctx.analysis.failure:  # the select stage walked mixed precision / the ladder and nothing passed
        raise AcceptanceError(ctx.analysis.failure)
    metric = ctx.metric
    base_eval, quant_eval = ctx.baseline.evaluation, ctx.quantized.evaluation
    ctx.verdict = ctx.verdict or check_acceptance(
        acceptance=ctx.spec.acceptance,
        baseline_accuracy=base_eval.accuracy(metric) if base_eval else None,
        quantized_accuracy=quant_eval.accuracy(metric) if quant_eval else None,
        baseline_size=ctx.baseline.size_bytes,
        quantized_size=ctx.quantized.size_bytes,
        agreement=ctx.agreement,
        sqnr_db=quant_eval.sqnr_db if quant_eval else None,
    )
    if ctx.spec.evaluation is None:
        ctx.warnings.append(
            "no evaluation.dataset: accuracy was not measured and acceptance.maxAccuracyDrop was not enforced"
        )
    elif "evaluation" in ctx.sets and not ctx.sets["evaluation"].labeled:
        a = ctx.spec.acceptance
        judged = [
            name
            for name, value in (("acceptance.minAgreement", a.min_agreement), ("acceptance.minSqnrDb", a.min_sqnr_db))
            if value is not None
        ]
        then = (
            f"fidelity was judged by {' and '.join(judged)}"
            if judged
            else "set acceptance.minAgreement to budget fidelity against FP32"
        )
        ctx.notes.append(
            f"accuracy n/a: the evaluation data has no labels, so acceptance.maxAccuracyDrop was not applied; {then}"
        )
    if ctx.verdict.passed:
        ctx.log(
            f"within budget: ratio {ctx.verdict.compression_ratio:.2f}x"
            + (f", accuracy drop {ctx.verdict.accuracy_drop:+.4f}" if ctx.verdict.accuracy_drop is not None else "")
            + (f", agreement {ctx.verdict.agreement:.4f}" if ctx.verdict.agreement is not None else "")
        )
        return
    reasons = "; ".join(ctx.verdict.reasons)
    if ctx.spec.acceptance.on_failure in (api.OnFailure.DEGRADE, api.OnFailure.REMEDY):
        ctx.degraded = True
        ctx.warnings.append(f"published degraded: {reasons}")
        ctx.log(f"over budget, publishing degraded: {reasons}")
        return
    raise AcceptanceError(f"the quantized model missed the acceptance budget: {reasons}")
