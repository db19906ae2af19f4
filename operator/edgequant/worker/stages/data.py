"""Stage ``validate-data``: sample, decode and check every dataset; the calibration rules on the calibration set."""

from __future__ import annotations

from collections.abc import Callable

from edgequant.api import v1alpha1 as api
from edgequant.data.loader import prepare_set
from edgequant.data.validation import check_calibration, has_errors
from edgequant.report.schema import Severity
from edgequant.util.errors import DataValidationError, InvalidInputError
from edgequant.worker.context import RunContext


def decode_progress(ctx: RunContext, role: str) -> Callable[[int, int], None]:
    """Progress callback for decoding one data set (a closure per role: the loop variable would be late-bound)."""
    return lambda done, total: ctx.progress.advance(task=f"decode {role}", done=done, total=total)


def _check_labels(ctx: RunContext) -> None:
    """What unlabeled data cannot do: train QAT, or enforce an accuracy budget the user set."""
    spec = ctx.spec
    training = ctx.indexes.get("training")
    if training is not None and not training.labeled:
        raise InvalidInputError(
            f"training.dataset {training.uri} has no labels and QAT fine-tunes on labels: "
            "use class folders (<class>/<image>) or an npz with y"
        )
    evaluation = ctx.indexes.get("evaluation")
    if evaluation is None or evaluation.labeled:
        return
    drop = spec.acceptance.max_accuracy_drop
    if drop != api.DEFAULT_MAX_ACCURACY_DROP:
        raise InvalidInputError(
            f"spec.acceptance.maxAccuracyDrop {drop:g} needs labeled evaluation data and evaluation.dataset {evaluation.uri} "
            "has no labels (no class folders / no y): remove maxAccuracyDrop and budget fidelity with "
            "acceptance.minAgreement (e.g. 0.99) or acceptance.minSqnrDb, or give the data labels"
        )


def validate_data(ctx: RunContext) -> None:
    """Sample, decode and check every dataset; calibration rules on the calibration set."""
    spec = ctx.spec
    _check_labels(ctx)
    seed = spec.calibration.seed if spec.calibration else 0
    counts = {
        "calibration": spec.calibration.samples if spec.calibration else None,
        "evaluation": spec.evaluation.samples if spec.evaluation else None,
        "training": spec.training.max_samples if spec.training else None,
    }
    for role, index in ctx.indexes.items():
        prepared = prepare_set(
            index,
            name=role,
            contract=spec.model.input,
            samples=counts[role],
            seed=seed,
            progress=decode_progress(ctx, role),
        )
        ctx.sets[role] = prepared
        ctx.findings.extend(prepared.findings)
        ctx.log(f"{role}: {len(prepared)} usable of {prepared.requested} requested")
    if "calibration" in ctx.sets and spec.calibration is not None:
        evaluation = ctx.indexes.get("evaluation")
        ctx.findings.extend(
            check_calibration(
                ctx.sets["calibration"].labels,
                calibration=spec.calibration,
                class_names=ctx.indexes["calibration"].classes,
                evaluation_labels=set(evaluation.labels.tolist())
                if evaluation is not None and evaluation.labeled
                else None,
                labeled=ctx.sets["calibration"].labeled,
            )
        )
    for finding in ctx.findings:
        ctx.log(f"{finding.severity.value}: {finding.dataset}: {finding.message}")
        if finding.severity is Severity.WARNING:
            ctx.warnings.append(f"{finding.dataset}: {finding.message}")
    if has_errors(ctx.findings):
        errors = [f for f in ctx.findings if f.severity is Severity.ERROR]
        raise DataValidationError("; ".join(f"{f.dataset}: {f.message}" for f in errors))
