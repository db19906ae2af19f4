"""Entry shared by the pod (``edgequant-worker``) and the laptop (``edgequant run``): spec in, WorkerResult out.

Reading a spec needs the API alone: the sandbox's parent (worker/sandbox.py) reads it to scope the child's storage
and never runs a stage, so the pipeline and what it imports load only when a run starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgequant.api import v1alpha1 as api
from edgequant.api import validation
from edgequant.api.result import WorkerResult
from edgequant.util.errors import InvalidInputError

if TYPE_CHECKING:
    from edgequant.worker.context import RunContext
    from edgequant.worker.pipeline import Stage
    from edgequant.worker.progress import Progress


def spec_from_document(document: Any) -> tuple[api.QuantizationJobSpec, str | None, str | None]:
    """Accept a whole QuantizationJob or its bare spec; every problem is named with its field path."""
    if isinstance(document, dict) and "spec" in document and ("kind" in document or "apiVersion" in document):
        wrapped = document
    else:
        wrapped = {"apiVersion": api.API_VERSION, "kind": api.KIND, "spec": document}
    job, problems = validation.validate_document(wrapped)
    if problems or job is None:
        raise InvalidInputError("invalid spec: " + "; ".join(str(p) for p in problems))
    return job.spec, job.metadata.name, job.metadata.namespace


def run_job(
    spec: api.QuantizationJobSpec,
    *,
    workdir: Path,
    progress: Progress,
    base_dir: Path | None = None,
    job_name: str | None = None,
    job_namespace: str | None = None,
    stages: Sequence[Stage] | None = None,
) -> tuple[WorkerResult, RunContext]:
    """Run every stage for ``spec`` (with what its target fills in), or ``stages`` (default ``pipeline.STAGES``);
    relative file:// URIs resolve against ``base_dir``."""
    from edgequant.api.targets import resolve_target
    from edgequant.storage import Stores
    from edgequant.worker import pipeline
    from edgequant.worker.context import RunContext

    spec, choices = resolve_target(spec)
    ctx = RunContext(
        spec=spec,
        workdir=workdir,
        stores=Stores(storage=spec.storage, base_dir=base_dir),
        progress=progress,
        job_name=job_name,
        job_namespace=job_namespace,
        target_choices=choices,
    )
    for choice in choices:
        progress.log(f"target {spec.target}: {choice.field} = {choice.value}")
    return pipeline.run(ctx, stages=pipeline.STAGES if stages is None else stages), ctx
