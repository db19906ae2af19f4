"""Stage ``fetch``: download the model and every dataset the method reads, and list the datasets."""

from __future__ import annotations

from pathlib import Path

from edgequant.api import v1alpha1 as api
from edgequant.api.validation import spec_warnings
from edgequant.worker.context import RunContext


def dataset_roles(spec: api.QuantizationJobSpec) -> dict[str, api.Dataset]:
    """The datasets this method reads, by role."""
    roles: dict[str, api.Dataset] = {}
    if spec.calibration is not None and (spec.method.needs_calibration or spec.method.needs_training):
        roles["calibration"] = spec.calibration.dataset
    if spec.training is not None and (spec.method.needs_training or spec.acceptance.on_failure is api.OnFailure.REMEDY):
        roles["training"] = spec.training.dataset
    if spec.evaluation is not None:
        roles["evaluation"] = spec.evaluation.dataset
    return roles


def fetch(ctx: RunContext) -> None:
    """Download the model and every dataset the method reads; list the datasets."""
    spec = ctx.spec
    ctx.log(f"model {spec.model.uri}")
    ctx.model_path = ctx.stores.download(
        spec.model.uri, ctx.workdir / "model", sha256=spec.model.sha256, sha256_field="spec.model.sha256"
    )
    # imported once the model is here: a run whose model is missing or denied ends without loading numpy and PIL
    from edgequant.data.datasets import index_dataset
    from edgequant.worker.stages.measure import model_size

    ctx.source_size_bytes = model_size(ctx.model_path)
    local: dict[str, Path] = {}
    for role, dataset in dataset_roles(spec).items():
        if dataset.uri not in local:
            ctx.log(f"{role} data {dataset.uri}")
            local[dataset.uri] = ctx.stores.download(dataset.uri, ctx.workdir / "data" / role)
        ctx.indexes[role] = index = index_dataset(
            local[dataset.uri], layout=dataset.layout, uri=dataset.uri, labels=dataset.labels
        )
        ctx.log(
            f"{role}: {len(index.samples)} samples "
            + (f"in {len(index.classes)} classes" if index.labeled else "without labels")
        )
    # settings the method ignores or that look wrong (`edgequant validate` prints the same): notes, never failures
    ctx.notes.extend(f"spec warning: {w}" for w in spec_warnings(spec))
