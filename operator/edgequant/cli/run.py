"""`edgequant run JOB.yaml...`: the worker's pipeline in this process, with progress bars and one summary table.

file:// URIs need no server; relative ones (file://data/x/) resolve against
the job file's folder. s3:// URIs use the same boto3 chain as the pod.
Exit code: 0 when every job succeeded, else the first failing job's code.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from rich.console import JustifyMethod


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="JOB.yaml",
        help="QuantizationJob manifests (several documents per file allowed)",
    )
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or stage logs, only the summary table")


@dataclass
class _Outcome:
    label: str
    result: Any
    ctx: Any | None


class RichProgress:
    """Progress bars for stages and long tasks; stage log lines printed above them."""

    def __init__(self, progress: Any, *, label: str, quiet: bool) -> None:
        self._progress = progress
        self._label = label
        self._quiet = quiet
        self._stage_task: Any = None
        self._tasks: dict[str, Any] = {}

    def stage_started(self, *, index: int, total: int, name: str, title: str) -> None:
        if self._stage_task is None:
            self._stage_task = self._progress.add_task(f"{self._label}", total=total)
        self._progress.update(self._stage_task, completed=index - 1, description=f"{self._label}: {name}")

    def stage_finished(self, *, name: str, seconds: float, ok: bool) -> None:
        self._progress.advance(self._stage_task)
        if not self._quiet:
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self._progress.console.print(f"{mark} {self._label}: {name} ({seconds:.1f}s)")

    def log(self, message: str) -> None:
        if not self._quiet:
            from rich.text import Text

            self._progress.console.print(Text(f"  {message}", style="dim"), soft_wrap=True)

    def advance(self, *, task: str, done: int, total: int) -> None:
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(f"  {task}", total=total)
        self._progress.update(self._tasks[task], completed=done, total=total)
        if done >= total:
            self._progress.remove_task(self._tasks.pop(task))

    def close(self) -> None:
        if self._stage_task is not None:
            self._progress.remove_task(self._stage_task)


def _load_jobs(files: list[Path], sweeps: list[Any] | None = None) -> list[tuple[Path, Any]]:
    """Job documents in order; a QuantizationSweep becomes its cells' documents and is appended to ``sweeps``."""
    from edgequant.util.errors import InvalidInputError

    jobs: list[tuple[Path, Any]] = []
    for path in files:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except OSError as exc:
            raise InvalidInputError(f"{path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"{path}: not valid YAML: {exc}") from exc
        found = False
        for d in docs:
            kind = d.get("kind") if isinstance(d, dict) else None
            if kind == "QuantizationSweep" and sweeps is not None:
                from edgequant.sweep import local, plan

                try:
                    sweep = local.load(d)
                except plan.SweepSpecError as exc:
                    raise InvalidInputError(f"{path}: invalid QuantizationSweep: {exc}") from exc
                sweep.base_dir = path.resolve().parent
                sweeps.append(sweep)
                jobs.extend((path, cell) for cell in sweep.documents())
                found = True
            elif kind in (None, "QuantizationJob"):
                jobs.append((path, d))
                found = True
        if not found:
            raise InvalidInputError(f"{path}: no QuantizationJob in the file")
    return jobs


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:,.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.2f} MiB"


def summary_table(outcomes: list[_Outcome]) -> Any:
    """One row per distinct FP32 baseline, then one per job: method, size, ratio, accuracy, drop, agreement with FP32, latency."""
    from rich.table import Table

    table = Table(title="edgequant run", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("job", "left"),
        ("method", "left"),
        ("size", "right"),
        ("ratio", "right"),
        ("accuracy", "right"),
        ("drop", "right"),
        ("agree", "right"),
        ("latency", "right"),
        ("result", "left"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)
    seen: set[str] = set()
    for o in outcomes:
        ctx = o.ctx
        if ctx is None or ctx.baseline is None or ctx.spec.model.uri in seen:
            continue
        seen.add(ctx.spec.model.uri)
        e = ctx.baseline.evaluation
        acc = e.accuracy(ctx.metric) if e else None
        table.add_row(
            "(baseline)",
            ctx.baseline.format,
            _fmt_size(ctx.baseline.size_bytes),
            "1.00x",
            f"{acc:.4f}" if acc is not None else "-",
            "",
            "",
            f"{e.latency_ms:.3f} ms" if e and e.latency_ms is not None else "-",
            "",
        )
    for o in outcomes:
        r = o.result
        q = r.results.quantized if r.results else None
        ratio = r.results.compression_ratio if r.results else None
        drop = r.results.accuracy_drop if r.results else None
        agree = r.results.agreement if r.results else None
        method = (r.results.method.value if r.results and r.results.method else None) or (
            o.ctx.spec.method.value if o.ctx else "-"
        )
        status = "[green]ok[/]" if r.exit_code == 0 else f"[red]{r.reason}[/]"
        if r.results and r.results.degraded:
            status = "[yellow]degraded[/]"
        table.add_row(
            o.label,
            method,
            _fmt_size(q.size_bytes if q else None),
            f"{ratio:.2f}x" if ratio else "-",
            f"{q.accuracy:.4f}" if q and q.accuracy is not None else "-",
            f"{drop:+.4f}" if drop is not None else "-",
            f"{agree:.4f}" if agree is not None else "-",
            f"{q.latency_ms:.3f} ms" if q and q.latency_ms is not None else "-",
            status,
        )
    return table


def _print_outcome(console: Any, outcome: _Outcome, *, quiet: bool) -> None:
    """Failures always; successes unless --quiet."""
    from rich.text import Text

    result = outcome.result
    if quiet and result.exit_code == 0:
        return
    colour = "green" if result.exit_code == 0 else "red"
    console.print(Text.assemble((f"{outcome.label}: {result.reason}", colour), f": {result.message}"), soft_wrap=True)
    if result.results and result.results.report_uri:
        console.print(Text(f"  report: {result.results.report_uri}"), soft_wrap=True)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from edgequant.api.result import WorkerResult
    from edgequant.util.errors import EdgequantError
    from edgequant.worker.runner import run_job, spec_from_document

    console = Console(stderr=True)
    sweeps: list[Any] = []
    try:
        jobs = _load_jobs(args.files, sweeps)
    except EdgequantError as exc:
        console.print(f"[red]{exc}[/]")
        return int(exc.exit_code)
    outcomes: list[_Outcome] = []
    root = args.workdir or Path(tempfile.mkdtemp(prefix="edgequant-run-"))
    try:
        for n, (path, document) in enumerate(jobs, start=1):
            label = (document.get("metadata") or {}).get("name") if isinstance(document, dict) else None
            label = label or f"{path.stem}[{n}]"
            try:
                spec, name, namespace = spec_from_document(document)
            except EdgequantError as exc:
                outcomes.append(_Outcome(label, WorkerResult.for_exit(exc.exit_code, f"{path}: {exc}"), None))
                _print_outcome(console, outcomes[-1], quiet=args.quiet)
                continue
            columns = (
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=console, transient=True, disable=args.quiet) as bars:
                progress = RichProgress(bars, label=label, quiet=args.quiet)
                result, ctx = run_job(
                    spec,
                    workdir=root / f"{n:02d}-{label}",
                    progress=progress,
                    base_dir=path.resolve().parent,
                    job_name=name,
                    job_namespace=namespace,
                )
                progress.close()
            outcomes.append(_Outcome(label, result, ctx))
            _print_outcome(console, outcomes[-1], quiet=args.quiet)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    out = Console()
    if not out.is_terminal:
        out = Console(width=132)  # pipes and CI logs: wide enough for the table on one line per row
    out.print(summary_table(outcomes))
    failed_sweep = _finish_sweeps(sweeps, outcomes, out, console)
    failed = [o.result.exit_code for o in outcomes if o.result.exit_code != 0]
    if failed_sweep:
        return failed_sweep
    return failed[0] if failed else 0


def _finish_sweeps(sweeps: list[Any], outcomes: list[_Outcome], out: Any, console: Any) -> int:
    """Each sweep's status from its cells, its table, and its report under its output URI (exit code, 0 when written)."""
    from rich.console import Console

    from edgequant.sweep import local
    from edgequant.util.errors import EdgequantError

    by_label = {o.label: o for o in outcomes}
    code = 0
    if sweeps and not out.is_terminal:
        out = Console(width=200)  # pipes and CI logs: the sweep's table has twelve columns
    for sweep in sweeps:
        sweep.results = {c.name: by_label[c.name].result for c in sweep.cells if c.name in by_label}
        status = local.sweep_status(sweep)
        try:
            status["reportUri"] = local.publish(sweep.name, sweep.sweep.spec, status, base_dir=sweep.base_dir)
        except EdgequantError as exc:
            console.print(f"[red]sweep {sweep.name}: report not written: {exc}[/]")
            code = code or int(exc.exit_code)
        out.print(local.table(sweep.name, status))
        for r in status["recommendations"]:
            out.print(f"recommended for {r['target']}: {r.get('candidate') or '-'} ({r['reason']})")
        if status.get("reportUri"):
            out.print(f"sweep report: {status['reportUri']}")
    return code
