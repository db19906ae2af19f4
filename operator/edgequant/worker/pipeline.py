"""The worker's run: the table of stages, walked in order on one ``RunContext``.

fetch -> validate-data -> baseline -> quantize -> evaluate -> sensitivity -> select -> diagnose -> target ->
gate -> upload, then the report is always written (also after a failure, so the findings reach the user) and the
run ends in a ``WorkerResult``.

Each stage is a plain function of the context, in ``worker/stages/``; ``STAGES`` is the table the run walks, and
its names are what logs, ``status.progress`` and report.json's ``stages`` show. A stage plugs in by inserting a
``Stage`` entry, e.g. ``insert_after(STAGES, "quantize", Stage("my-check", ..., run_my_check))``.

The table names each stage's module, imported when the run reaches the stage: a run that fails early (a missing
model, a denied bucket: the common failure, hundreds at a time when a whole sweep is misconfigured) spends its
CPU on the report, not on loading numpy, PIL and the analysis for stages it never starts.
"""

from __future__ import annotations

import importlib
import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult
from edgequant.report.build import write_report
from edgequant.report.html import render_html
from edgequant.report.schema import REPORT_NAME
from edgequant.util.errors import EdgequantError
from edgequant.worker.context import RunContext, StageRecord
from edgequant.worker.result import summary_line, worker_result


@dataclass(frozen=True)
class Stage:
    name: str
    """Stable kebab-case id, shown in logs, progress and the report."""
    title: str
    run: Callable[[RunContext], None]


@dataclass(frozen=True)
class StageFunction:
    """A stage function by name, ``edgequant.worker.stages.<module>.<function>``, imported when first called."""

    module: str
    function: str

    def resolve(self) -> Callable[[RunContext], None]:
        run: Callable[[RunContext], None] = getattr(
            importlib.import_module(f"edgequant.worker.stages.{self.module}"), self.function
        )
        return run

    def __call__(self, ctx: RunContext) -> None:
        self.resolve()(ctx)


STAGES: tuple[Stage, ...] = (
    Stage("fetch", "download the model and data", StageFunction("fetch", "fetch")),
    Stage("validate-data", "decode, sample and check the datasets", StageFunction("data", "validate_data")),
    Stage("baseline", "measure the FP32 model", StageFunction("baseline", "evaluate_baseline")),
    Stage("quantize", "quantize", StageFunction("quantize", "quantize")),
    Stage("evaluate", "measure the quantized model", StageFunction("quantize", "evaluate_quantized")),
    Stage("sensitivity", "rank layers by sensitivity", StageFunction("analysis", "sensitivity")),
    Stage("select", "mixed precision and the degrade ladder", StageFunction("analysis", "select")),
    Stage("diagnose", "compare FP32 and quantized outputs", StageFunction("analysis", "diagnose")),
    Stage("target", "check the artifact against spec.target", StageFunction("target", "target_check")),
    Stage("gate", "check the acceptance budget", StageFunction("gate", "gate")),
    Stage("upload", "upload the artifact", StageFunction("upload", "upload_artifact")),
)


def insert_after(stages: Sequence[Stage], name: str, *new: Stage) -> tuple[Stage, ...]:
    """A copy of ``stages`` with ``new`` after the stage called ``name``."""
    names = [s.name for s in stages]
    if name not in names:
        raise KeyError(f"no stage {name!r} in {names}")
    at = names.index(name) + 1
    return (*stages[:at], *new, *stages[at:])


# --------------------------------------------------------------------------- the run


def _publish_report(ctx: RunContext) -> None:
    """Write report.json below output.uri whatever the outcome, so findings reach the user after a failure too."""
    path = write_report(ctx, ctx.workdir / REPORT_NAME)
    html = path.with_name("report.html")
    html.write_text(render_html(json.loads(path.read_text())), encoding="utf-8")
    try:
        ctx.uploads["report"] = ctx.stores.upload(path, ctx.output_uri(REPORT_NAME), content_type="application/json")
        ctx.uploads["report-html"] = ctx.stores.upload(html, ctx.output_uri(html.name), content_type="text/html")
    except EdgequantError as exc:
        ctx.progress.log(f"report.json not uploaded: {exc}")
        if ctx.exit_code is ExitCode.SUCCESS:
            ctx.exit_code, ctx.message = exc.exit_code, f"report.json not uploaded: {exc}"


def run(ctx: RunContext, *, stages: Sequence[Stage] = STAGES) -> WorkerResult:
    """Walk ``stages``; stop at the first failure; always publish the report; return the compact result."""
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    reached = None
    for index, stage in enumerate(stages, start=1):
        ctx.progress.stage_started(index=index, total=len(stages), name=stage.name, title=stage.title)
        reached = f"{index}/{len(stages)} {stage.name}"[:64]
        start = time.monotonic()
        ok = False
        try:
            stage.run(ctx)
            ok = True
        except EdgequantError as exc:
            ctx.exit_code, ctx.message = exc.exit_code, str(exc)
        except Exception as exc:  # an accident: keep the traceback in the log, the summary in the result
            ctx.progress.log(traceback.format_exc())
            ctx.exit_code = ExitCode.INTERNAL_ERROR
            ctx.message = f"internal error in stage {stage.name}: {type(exc).__name__}: {exc}"
        seconds = time.monotonic() - start
        ctx.stages.append(StageRecord(name=stage.name, seconds=seconds, ok=ok))
        ctx.progress.stage_finished(name=stage.name, seconds=seconds, ok=ok)
        if not ok:
            break
    if ctx.exit_code is ExitCode.SUCCESS:
        ctx.message = summary_line(ctx)
    _publish_report(ctx)
    return worker_result(ctx).model_copy(update={"stage": reached})
