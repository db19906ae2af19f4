"""The sweep's combined report.html (candidates table, Pareto plot, recommendations) and its sweep.json. Pure.

Both are built from the sweep's status (wire form), whoever computed it: the operator's report Job or
``edgequant run``.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from edgequant.report.html import _CSS
from edgequant.report.svg import MUTED_COLOR, OK_COLOR, QUANT_COLOR, Point, scatter_chart

REPORT_HTML = "report.html"
REPORT_JSON = "sweep.json"


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def fmt_size(n: Any) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:,.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.2f} MiB"


def pareto_svg(status: Mapping[str, Any]) -> str:
    """Size against accuracy drop; Pareto-optimal candidates outlined, labelled and joined; failed gates muted."""
    front = set(status.get("paretoFront") or [])
    points = []
    for c in status.get("candidates") or []:
        if c.get("sizeBytes") is None:
            continue
        color = OK_COLOR if c.get("passedGate") else MUTED_COLOR if c.get("phase") == "Failed" else QUANT_COLOR
        label = (
            f"{c['name']}: {c.get('method')}"
            if c["name"] not in front
            else c.get("method", c["name"])
            + "".join(f" {v}" for v in (c.get("options") or {}).values())
            + (f" @{c['target']}" if c.get("target") else "")
        )
        points.append(
            Point(
                label=label,
                x=c["sizeBytes"] / 1024,
                y=c.get("accuracyDrop") or 0.0,
                color=color,
                highlight=c["name"] in front,
            )
        )
    if not points:
        return ""
    return scatter_chart(
        points,
        title="Pareto front: artifact size vs accuracy drop (latency is the third objective)",
        x_label="artifact size, KiB",
        y_label="accuracy drop",
    )


def render_html(name: str, status: Mapping[str, Any]) -> str:
    front = set(status.get("paretoFront") or [])
    recommended = {r.get("candidate") for r in status.get("recommendations") or []}
    rows = []
    for c in status.get("candidates") or []:
        marks = " ".join(
            m for m, on in (("Pareto", c["name"] in front), ("recommended", c["name"] in recommended)) if on
        )
        options = ", ".join(f"{k}={v}" for k, v in (c.get("options") or {}).items())
        rows.append(
            f"<tr><td>{escape(c['name'])}</td><td>{escape(c.get('target') or '-')}</td><td>{escape(c.get('method', ''))}</td>"
            f"<td>{escape(options or '-')}</td><td>{escape(c.get('phase', ''))}</td><td class=n>{fmt_size(c.get('sizeBytes'))}</td>"
            f"<td class=n>{fmt(c.get('compressionRatio'), '.2f')}x</td><td class=n>{fmt(c.get('accuracy'), '.4f')}</td>"
            f"<td class=n>{fmt(c.get('accuracyDrop'), '+.4f')}</td><td class=n>{fmt(c.get('latencyMs'), '.3f')} ms</td>"
            f"<td>{'yes' if c.get('passedGate') else 'no'}</td><td>{escape(marks)}</td></tr>"
        )
    recs = "".join(
        f"<tr><td>{escape(r['target'])}</td><td>{escape(r.get('candidate') or '-')}</td><td>{escape(r.get('method') or '-')}</td><td>{escape(r.get('reason', ''))}</td></tr>"
        for r in status.get("recommendations") or []
    )
    skipped = "".join(
        f"<li>{escape(s.get('target') or '-')} / {escape(s['method'])}: {escape(s['reason'])}</li>"
        for s in status.get("skipped") or []
    )
    header = (
        "<tr><th>cell</th><th>target</th><th>method</th><th>options</th><th>phase</th><th>size</th><th>ratio</th>"
        "<th>accuracy</th><th>drop</th><th>latency</th><th>passed gate</th><th></th></tr>"
    )
    body = [
        f"<h1>edgequant sweep — {escape(name)}</h1>",
        (
            f"<p class=sub>{status.get('cells', 0)} cells, {status.get('finished', 0)} finished, {status.get('passed', 0)} within the budget. "
            "Latency is measured on the worker's CPU, not on the target device.</p>"
        ),
        "<h2>Recommendations</h2><table><tr><th>target</th><th>candidate</th><th>method</th><th>why</th></tr>"
        + recs
        + "</table>",
        "<h2>Pareto front</h2>" + (pareto_svg(status) or "<p class=muted>No cell produced an artifact.</p>"),
        "<h2>Candidates</h2><table>" + header + "".join(rows) + "</table>",
    ]
    if skipped:
        body.append(f"<h2>Skipped</h2><ul>{skipped}</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape('edgequant sweep — ' + name)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
