"""Stage ``target``: the published artifact against spec.target's device constraints (coral-edgetpu: the Edge
TPU's op table, ``analysis/edgetpu.py``)."""

from __future__ import annotations

from edgequant.api.targets import TARGETS
from edgequant.worker.context import RunContext


def target_check(ctx: RunContext) -> None:
    """The published artifact against spec.target's device constraints (coral-edgetpu: the Edge TPU's op table)."""
    target = ctx.spec.target
    if target is None or ctx.artifact is None or not TARGETS[target.value].integer_only_accelerator:
        return
    if ctx.artifact.path.suffix != ".tflite":
        ctx.notes.append(
            f"target {target.value}: the artifact is not a TFLite model, so its ops were not checked against the Edge TPU's"
        )
        return
    from edgequant.analysis.edgetpu import check_ops, read_ops

    ctx.target_findings = check_ops(read_ops(ctx.artifact.path))
    for finding in ctx.target_findings:
        if finding.fired:
            ctx.warnings.append(f"{finding.check}: {finding.message}; fix: {finding.fixes[0]}")
    ctx.log("target check: " + (", ".join(f.check for f in ctx.target_findings if f.fired) or f"fits {target.value}"))
