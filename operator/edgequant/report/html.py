"""report.json -> one self-contained report.html: inline CSS and SVG, no scripts, no external assets.

Pure: a dict in, a string out. It reads the worker's report.json (``edgequant.report.schema.Report``: baseline,
quantized, comparison, outcome, input contract, warnings, and the ``analysis`` section). Missing parts are left out,
never invented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from edgequant.report.svg import (
    FLAG_COLOR,
    FP32_COLOR,
    MUTED_COLOR,
    OK_COLOR,
    Bar,
    hbar_chart,
    histogram_chart,
    pair_chart,
)

#: Sensitivity bars shown; the table below the chart lists every layer.
MAX_BARS = 40

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1000px;color:#1f2933;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d9e2ec;padding-bottom:4px}
.sub{color:#52606d;margin:0 0 12px}.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.pass{background:#e3f9e5;color:#14532d}.fail{background:#ffe3e3;color:#7f1d1d}.degraded{background:#fff3c4;color:#7c4a03}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef2f6;vertical-align:top}
th{background:#f5f7fa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:12px}.finding{border-left:4px solid;padding:6px 10px;margin:8px 0;background:#fafbfc}
.finding.fired{border-color:#d62728}.finding.quiet{border-color:#54a24b}.finding ol{margin:4px 0 0 18px;padding:0}
.muted{color:#7b8794}code{background:#f0f4f8;padding:1px 4px;border-radius:3px}
svg text{font-family:inherit}svg .t{font-size:14px;font-weight:600;fill:#1f2933}svg .l{font-size:12px;fill:#323f4b}
svg .v{font-size:11px;fill:#52606d}svg .tag{fill:#7c3aed;font-weight:600}svg .axis{stroke:#9aa5b1}svg .thr{stroke:#d62728;stroke-dasharray:4 3}
"""


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page for one report.json dict."""
    analysis = report.get("analysis") or {}
    sections = [
        _header(report, analysis),
        _target(report.get("target")),
        _comparison(report),
        _sensitivity(analysis.get("sensitivity"), analysis.get("mixedPrecision")),
        _selection(
            analysis.get("gate"),
            analysis.get("mixedPrecision"),
            published=bool((report.get("outcome") or {}).get("succeeded", True)),
        ),
        _diagnostics(analysis.get("diagnostics")),
        _contract(report.get("inputContract")),
        _warnings(list(report.get("warnings") or []), list(report.get("notes") or [])),
    ]
    title = f"edgequant report — {_name(report)}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n"
    )


def _name(report: Mapping[str, Any]) -> str:
    job = report.get("job") or {}
    if job.get("name"):
        return f"{job['namespace'] + '/' if job.get('namespace') else ''}{job['name']}"
    uri = str((report.get("model") or {}).get("uri") or "")
    return uri.rstrip("/").rsplit("/", 1)[-1] or "quantization job"


def _header(report: Mapping[str, Any], analysis: Mapping[str, Any]) -> str:
    outcome = report.get("outcome") or {}
    gate = analysis.get("gate") or report.get("gate") or {}
    parts = [f"<h1>{escape(_name(report))}</h1>"]
    sub = []
    asked, published = report.get("method"), report.get("publishedMethod")
    if asked:
        sub.append(
            f"method <code>{escape(str(asked))}</code>"
            + (f" → published <code>{escape(str(published))}</code>" if published and published != asked else "")
        )
    if report.get("createdAt"):
        sub.append(escape(str(report["createdAt"])))
    artifact = report.get("artifact") or {}
    if artifact.get("uri"):
        sub.append(f"artifact <code>{escape(str(artifact['uri']))}</code>")
    if sub:
        parts.append(f'<p class="sub">{" · ".join(sub)}</p>')
    reasons = "; ".join(gate.get("reasons") or [])
    if outcome and not outcome.get("succeeded", True):
        parts.append(
            f'<div class="banner fail">{escape(str(outcome.get("reason", "Failed")))}: {escape(str(outcome.get("message", "")))}</div>'
        )
    elif outcome.get("degraded") or gate.get("degraded"):
        text = "Degraded: " + (
            f"the published artifact misses the budget: {reasons}"
            if reasons
            else "the published artifact fell back down the ladder"
        )
        parts.append(f'<div class="banner degraded">{escape(text)}</div>')
    elif gate:
        parts.append('<div class="banner pass">Acceptance gate passed.</div>')
    if outcome.get("message") and outcome.get("succeeded", True):
        parts.append(f"<p>{escape(str(outcome['message']))}</p>")
    return "\n".join(parts)


def _comparison(report: Mapping[str, Any]) -> str:
    base, quant = report.get("baseline") or {}, report.get("quantized") or {}
    if not base and not quant:
        return ""
    mb = 1024 * 1024
    size_b, size_q = base.get("sizeBytes"), quant.get("sizeBytes")
    lat_b, lat_q = base.get("latencyMsMedian"), quant.get("latencyMsMedian")
    charts = [
        pair_chart(title="accuracy", fp32=base.get("accuracy"), quantized=quant.get("accuracy"), unit=""),
        pair_chart(
            title="size",
            fp32=None if size_b is None else size_b / mb,
            quantized=None if size_q is None else size_q / mb,
            unit=" MiB",
        ),
        pair_chart(title="median latency per image", fp32=lat_b, quantized=lat_q, unit=" ms"),
    ]
    rows = [
        ("format", escape(str(base.get("format", "—"))), escape(str(quant.get("format", "—")))),
        ("accuracy", _f(base.get("accuracy")), _f(quant.get("accuracy"))),
        ("size (bytes)", _i(size_b), _i(size_q)),
        ("median latency (ms)", _f(lat_b, 3), _f(lat_q, 3)),
        ("input", escape(_tensor(base.get("input"))), escape(_tensor(quant.get("input")))),
    ]
    cmp = report.get("comparison") or {}
    extra = []
    if cmp.get("compressionRatio") is not None:
        extra.append(f"compression {cmp['compressionRatio']:.2f}x")
    if cmp.get("accuracyDrop") is not None:
        extra.append(f"accuracy drop {cmp['accuracyDrop']:+.4f}")
    if cmp.get("agreement") is not None:
        extra.append(f"same top-1 on {cmp['agreement']:.1%} of samples")
    if cmp.get("sqnrDb") is not None:
        extra.append(f"output SQNR {cmp['sqnrDb']:.1f} dB")
    if base.get("evaluatedSamples") and base.get("accuracy") is None:
        extra.append("accuracy n/a (evaluation data without labels)")
    if cmp.get("latencySpeedup") is not None:
        extra.append(f"speed-up {cmp['latencySpeedup']:.2f}x")
    table = (
        "<table><tr><th></th><th>FP32</th><th>quantized</th></tr>"
        + "".join(f'<tr><td>{escape(k)}</td><td class="n">{a}</td><td class="n">{b}</td></tr>' for k, a, b in rows)
        + "</table>"
    )
    return (
        "<h2>FP32 vs quantized</h2>"
        + (f'<p class="sub">{escape(" · ".join(extra))}</p>' if extra else "")
        + f'<div class="charts">{"".join(charts)}</div>{table}'
    )


def _tensor(info: Mapping[str, Any] | None) -> str:
    if not info:
        return "—"
    text = f"{info.get('dtype')} {info.get('shape')}"
    return text + (
        f" scale {info['scale']:.6g} zero point {info.get('zeroPoint')}" if info.get("scale") is not None else ""
    )


def _sensitivity(sens: Mapping[str, Any] | None, mixed: Mapping[str, Any] | None) -> str:
    if not sens or not sens.get("layers"):
        return ""
    layers: Sequence[Mapping[str, Any]] = sens["layers"]
    pinned = set((mixed or {}).get("pinned") or [])
    exhaustive = sens.get("mode") == "exhaustive"
    bars = []
    for entry in layers[:MAX_BARS]:
        tag = "pinned" if entry["layer"] in pinned else ""
        color = FLAG_COLOR if entry.get("flagged") else FP32_COLOR
        if exhaustive:
            delta = float(entry.get("accuracyDelta") or 0.0)
            bars.append(Bar(label=entry["layer"], value=max(0.0, delta), color=color, text=f"{delta:+.4f}", tag=tag))
        else:
            injected = entry.get("injectedSqnrDb")
            own = float(injected) if injected is not None else 200.0
            bars.append(
                Bar(label=entry["layer"], value=max(0.0, 60.0 - own), color=color, text=f"{own:.1f} dB", tag=tag)
            )
    if exhaustive:
        title = "accuracy lost when only this layer is quantized (exhaustive)"
        chart = hbar_chart(
            bars, title=title, threshold=sens.get("threshold"), threshold_label=f"threshold {sens.get('threshold')}"
        )
    else:
        title = "noise each layer adds, SQNR in dB (fast; lower = more sensitive)"
        flag_db = sens.get("fastFlagSqnrDb")
        chart = hbar_chart(
            bars, title=title, threshold=None if flag_db is None else 60.0 - flag_db, threshold_label=f"{flag_db} dB"
        )
    flagged = [e["layer"] for e in layers if e.get("flagged")]
    summary = [
        f"{len(layers)} layers, {len(flagged)} flagged",
        f"{sens.get('seconds', 0):.1f} s",
        f"{sens.get('quantizeRuns', 0)} quantize runs",
    ]
    agreement = sens.get("agreement")
    agree_html = ""
    if agreement:
        rho = agreement.get("spearman")
        agree_html = (
            f"<p>Fast vs exhaustive: top-{agreement['k']} overlap <b>{agreement['topKOverlap']} of {agreement['k']}</b>"
            + (f", Spearman ρ {rho:.2f}" if rho is not None else "")
            + f". Fast top: {escape(', '.join(agreement.get('fastTop') or []))}; exhaustive top: {escape(', '.join(agreement.get('exhaustiveTop') or []))}.</p>"
        )
    head = (
        "<tr><th>#</th><th>layer</th>"
        + (
            "<th>accuracy alone</th><th>delta</th>"
            if exhaustive
            else "<th>injected SQNR dB</th><th>output SQNR dB</th><th>cosine</th>"
        )
        + "<th></th></tr>"
    )
    rows = []
    for e in layers:
        mark = ("flagged " if e.get("flagged") else "") + ("pinned" if e["layer"] in pinned else "")
        cells = (
            f'<td class="n">{_f(e.get("accuracy"))}</td><td class="n">{_f(e.get("accuracyDelta"), signed=True)}</td>'
            if exhaustive
            else f'<td class="n">{_f(e.get("injectedSqnrDb"), 1)}</td><td class="n">{_f(e.get("sqnrDb"), 1)}</td><td class="n">{_f(e.get("cosine"))}</td>'
        )
        rows.append(
            f"<tr><td>{e.get('rank')}</td><td>{escape(e['layer'])}</td>{cells}<td>{escape(mark.strip())}</td></tr>"
        )
    return (
        "<h2>Per-layer sensitivity</h2>"
        f'<p class="sub">{escape(" · ".join(summary))}</p>{chart}{agree_html}'
        f"<details><summary>all layers</summary><table>{head}{''.join(rows)}</table></details>"
    )


def _selection(gate: Mapping[str, Any] | None, mixed: Mapping[str, Any] | None, *, published: bool) -> str:
    if not gate:
        return ""
    parts = ["<h2>Acceptance and mixed precision</h2>"]
    budget = [
        f"accuracy drop ≤ {gate.get('maxAccuracyDrop')}"
        + ("" if gate.get("accuracyBudgetApplied", True) else " (not applied: no labels)")
    ]
    if gate.get("minAgreement") is not None:
        budget.append(f"agreement ≥ {gate['minAgreement']}")
    if gate.get("minSqnrDb") is not None:
        budget.append(f"output SQNR ≥ {gate['minSqnrDb']} dB")
    parts.append(
        f'<p class="sub">budget: {escape(", ".join(budget))}, compression ≥ {gate.get("minCompressionRatio")}x, '
        f"onFailure {escape(str(gate.get('onFailure')))}</p>"
    )
    if mixed and (mixed.get("pinned") or mixed.get("note") or mixed.get("mode") not in (None, "off")):
        pinned = mixed.get("pinned") or []
        text = f"mixed precision <code>{escape(str(mixed.get('mode')))}</code>: " + (
            f"{len(pinned)} layer(s) kept in float: {escape(', '.join(pinned))}" if pinned else "no layer kept in float"
        )
        if mixed.get("note"):
            text += f" — {escape(mixed['note'])}"
        parts.append(f"<p>{text}</p>")
    trials = gate.get("trials") or []
    if trials:
        rows = []
        for t in trials:
            status = "passes" if t.get("passed") else "; ".join(t.get("reasons") or [])
            chosen = (
                ("<b>published</b>" if published else "<b>best found, not published</b>") if t.get("chosen") else ""
            )
            color = OK_COLOR if t.get("passed") else (MUTED_COLOR if not t.get("chosen") else FLAG_COLOR)
            rows.append(
                f"<tr><td>{escape(str(t.get('rung')))}{_changes(t.get('changes'))}</td><td><code>{escape(str(t.get('method')))}</code></td>"
                f'<td>{escape(", ".join(t.get("pinned") or [])) or "—"}</td><td class="n">{_f(t.get("accuracy"))}</td>'
                f'<td class="n">{_f(t.get("agreement"))}</td><td class="n">{_f(t.get("sqnrDb"), 1)}</td>'
                f'<td class="n">{_i(t.get("sizeBytes"))}</td><td class="n">{_f(t.get("compressionRatio"), 2)}</td>'
                f'<td style="color:{color}">{escape(status)}</td><td>{chosen}</td></tr>'
            )
        parts.append(
            "<table><tr><th>rung</th><th>method</th><th>kept in float</th><th>accuracy</th><th>agreement</th><th>SQNR dB</th><th>bytes</th><th>ratio</th>"
            f"<th>gate</th><th></th></tr>{''.join(rows)}</table>"
        )
    skipped = gate.get("skipped") or []
    if skipped:
        parts.append('<p class="sub">remedy rungs not tried: ' + escape("; ".join(skipped)) + "</p>")
    return "".join(parts)


def _changes(changes: Mapping[str, Any] | None) -> str:
    """What a remedy rung changed in the spec, under its name."""
    if not changes:
        return ""
    return "<br><small>" + escape(", ".join(f"{k} {v}" for k, v in changes.items())) + "</small>"


def _target(target: Mapping[str, Any] | None) -> str:
    """spec.target: each value it chose and why, its checks, and what the figures mean for the device."""
    if not target:
        return ""
    parts = [
        f"<h2>Target <code>{escape(str(target.get('name')))}</code></h2>",
        f'<p class="sub">{escape(str(target.get("title", "")))} · {escape(str(target.get("runtime", "")))}</p>',
    ]
    parts += [f"<p><b>{escape(note)}</b></p>" for note in target.get("notes") or []]
    choices = target.get("choices") or []
    if choices:
        rows = "".join(
            f"<tr><td><code>{escape(str(c.get('field')))}</code></td><td><code>{escape(str(c.get('value')))}</code></td>"
            f"<td>{escape(str(c.get('reason')))}</td></tr>"
            for c in choices
        )
        parts.append(f"<table><tr><th>field</th><th>chosen</th><th>why</th></tr>{rows}</table>")
    else:
        parts.append("<p>The spec set everything the target would choose.</p>")
    for finding in target.get("findings") or []:
        fired = finding.get("fired")
        fixes = "".join(f"<li>{escape(fix)}</li>" for fix in finding.get("fixes") or [])
        parts.append(
            f'<div class="finding {"fired" if fired else "quiet"}"><b>{escape(finding["check"])}</b> — '
            f"{'detected' if fired else 'ok'}: {escape(finding.get('message', ''))}"
            + (f"<ol>{fixes}</ol>" if fixes else "")
            + "</div>"
        )
    return "".join(parts)


def _diagnostics(diag: Mapping[str, Any] | None) -> str:
    if not diag:
        return ""
    parts = ["<h2>Diagnostics</h2>"]
    outputs = diag.get("outputs")
    if outputs:
        parts.append(
            f'<p class="sub">FP32 vs quantized raw outputs on the same {outputs["samples"]} inputs: SQNR {outputs.get("sqnrDb", 0):.1f} dB, MSE {outputs["mse"]:.4g}, '
            f"mean cosine {outputs['cosine']:.4f}, max abs {outputs['maxAbs']:.4g}, same top-1 {outputs['top1Agreement']:.1%}</p>"
        )
    for finding in diag.get("findings") or []:
        fired = finding.get("fired")
        fixes = "".join(f"<li>{escape(fix)}</li>" for fix in finding.get("fixes") or [])
        parts.append(
            f'<div class="finding {"fired" if fired else "quiet"}"><b>{escape(finding["check"])}</b> — '
            f"{'detected' if fired else 'ok'}: {escape(finding.get('message', ''))}"
            + (f"<ol>{fixes}</ol>" if fixes else "")
            + "</div>"
        )
    dist = diag.get("distribution")
    if dist:
        parts.append(
            histogram_chart(
                title="output distribution, FP32 vs quantized",
                edges=dist["edges"],
                fp32=dist["fp32"],
                quantized=dist["quantized"],
            )
        )
    return "".join(parts)


def _contract(contract: Mapping[str, Any] | None) -> str:
    if not contract:
        return ""
    rows = [
        ("dtype", contract.get("dtype")),
        ("shape", contract.get("shape")),
        ("layout", contract.get("layout")),
        ("value range", contract.get("valueRange")),
        ("quantization scale", contract.get("quantScale")),
        ("quantization zero point", contract.get("quantZeroPoint")),
        ("preprocessing", contract.get("preprocessing")),
    ]
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in rows if v not in (None, ""))
    return f"<h2>Input contract of the artifact</h2><table>{body}</table>"


def _warnings(warnings: Sequence[str], notes: Sequence[str]) -> str:
    parts = []
    if warnings:
        parts.append(
            "<h2>Warnings</h2><ul>" + "".join(f"<li>{escape(str(w))}</li>" for w in dict.fromkeys(warnings)) + "</ul>"
        )
    if notes:
        parts.append(
            "<h2>Notes</h2><ul>" + "".join(f"<li>{escape(str(n))}</li>" for n in dict.fromkeys(notes)) + "</ul>"
        )
    return "".join(parts)


def _f(value: Any, digits: int = 4, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{float(value):+.{digits}f}" if signed else f"{float(value):.{digits}f}"


def _i(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"
