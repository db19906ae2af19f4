"""A QuantizationSweep in this process (``edgequant run``): its cells as job documents, then its status and report.

The cells run one after another through the same pipeline a pod runs; the sweep's status is computed by the
same functions the operator uses, from the cells' WorkerResults instead of their QuantizationJob statuses.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgequant.api import sweep as sweep_api
from edgequant.api.result import WorkerResult
from edgequant.storage import Stores, as_prefix
from edgequant.sweep import plan
from edgequant.sweep import report as sweep_report


@dataclass
class LocalSweep:
    name: str
    sweep: sweep_api.QuantizationSweep
    cells: list[plan.Cell]
    skipped: list[sweep_api.SkippedCell]
    results: dict[str, WorkerResult] = field(default_factory=dict)
    base_dir: Path | None = None

    def documents(self) -> list[dict[str, Any]]:
        """One QuantizationJob document per cell, named after it."""
        return [
            {
                "apiVersion": "edgequant.io/v1alpha1",
                "kind": "QuantizationJob",
                "metadata": {"name": c.name},
                "spec": plan.cell_wire(self.sweep.spec, c),
            }
            for c in self.cells
        ]


def load(document: Mapping[str, Any]) -> LocalSweep:
    """Raises plan.SweepSpecError naming the field when the sweep cannot run."""
    sweep = plan.parse(document)
    name = sweep.metadata.name or "sweep"
    cells, skipped = plan.expand(name, sweep.spec)
    return LocalSweep(name=name, sweep=sweep, cells=cells, skipped=skipped)


def status_of(result: WorkerResult) -> dict[str, Any]:
    """A cell's WorkerResult as the phase/results/message its QuantizationJob status would show."""
    return {
        "phase": "Succeeded" if result.exit_code == 0 else "Failed",
        "results": result.results.to_wire() if result.results else None,
        "message": result.message,
    }


def sweep_status(local: LocalSweep) -> dict[str, Any]:
    statuses = {name: status_of(r) for name, r in local.results.items()}
    status = plan.aggregate(local.cells, statuses, local.sweep.spec)
    status["skipped"] = [s.to_wire() for s in local.skipped]
    status["phase"] = (
        sweep_api.SweepPhase.COMPLETED.value
        if status["finished"] == status["cells"]
        else sweep_api.SweepPhase.RUNNING.value
    )
    return status


def publish(
    name: str, spec: sweep_api.QuantizationSweepSpec, status: Mapping[str, Any], *, base_dir: Path | None
) -> str:
    """Write report.html and sweep.json under the sweep's output URI; returns the report.html URI."""
    stores = Stores(storage=spec.storage, base_dir=base_dir)
    prefix = as_prefix(spec.output.uri)
    status = {**status, "reportUri": prefix + sweep_report.REPORT_HTML}
    with tempfile.TemporaryDirectory(prefix="edgequant-sweep-") as tmp:
        html = Path(tmp) / sweep_report.REPORT_HTML
        html.write_text(sweep_report.render_html(name, status))
        doc = Path(tmp) / sweep_report.REPORT_JSON
        doc.write_text(
            json.dumps(
                {
                    "apiVersion": "edgequant.io/v1alpha1",
                    "kind": sweep_api.KIND,
                    "metadata": {"name": name},
                    "status": status,
                },
                indent=2,
            )
        )
        stores.upload(doc, prefix + sweep_report.REPORT_JSON, content_type="application/json")
        stores.upload(html, prefix + sweep_report.REPORT_HTML, content_type="text/html")
    return status["reportUri"]


def table(name: str, status: Mapping[str, Any]) -> Any:
    """The sweep's candidates as a rich table, Pareto-optimal and recommended ones marked."""
    from rich.table import Table

    front = set(status.get("paretoFront") or [])
    recommended = {r.get("candidate"): r["target"] for r in status.get("recommendations") or [] if r.get("candidate")}
    t = Table(title=f"sweep {name}", title_justify="left")
    for column in (
        "cell",
        "target",
        "method",
        "options",
        "size",
        "ratio",
        "accuracy",
        "drop",
        "latency",
        "gate",
        "pareto",
        "recommended",
    ):
        t.add_column(column, no_wrap=True)
    for c in status.get("candidates") or []:
        t.add_row(
            c["name"],
            c.get("target") or "-",
            c.get("method", ""),
            ",".join(f"{k}={v}" for k, v in (c.get("options") or {}).items()) or "-",
            sweep_report.fmt_size(c.get("sizeBytes")),
            sweep_report.fmt(c.get("compressionRatio"), ".2f"),
            sweep_report.fmt(c.get("accuracy"), ".4f"),
            sweep_report.fmt(c.get("accuracyDrop"), "+.4f"),
            sweep_report.fmt(c.get("latencyMs"), ".3f"),
            "pass" if c.get("passedGate") else "fail",
            "*" if c["name"] in front else "",
            recommended.get(c["name"], ""),
        )
    return t


def labels_of(sweeps: Sequence[LocalSweep]) -> dict[str, LocalSweep]:
    return {c.name: s for s in sweeps for c in s.cells}
