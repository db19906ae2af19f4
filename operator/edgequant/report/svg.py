"""Tiny inline-SVG charts for the self-contained HTML report: no scripts, no external assets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

FP32_COLOR = "#4c78a8"
QUANT_COLOR = "#f58518"
FLAG_COLOR = "#d62728"
OK_COLOR = "#54a24b"
MUTED_COLOR = "#9aa5b1"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    color: str = FP32_COLOR
    text: str = ""
    """Shown after the bar; the value when empty."""
    tag: str = ""
    """A short marker after the text (e.g. 'pinned')."""


def hbar_chart(
    bars: Sequence[Bar], *, title: str, width: int = 720, threshold: float | None = None, threshold_label: str = ""
) -> str:
    """Horizontal bars, one row per item, with an optional vertical threshold line."""
    row, label_w, top, text_w = 22, 220, 28, 150
    plot_w = width - label_w - text_w
    height = top + row * len(bars) + (28 if threshold is not None else 12)
    vmax = max([b.value for b in bars] + [threshold or 0.0, 1e-12])
    parts = [_svg_open(width, height, title), f'<text x="0" y="16" class="t">{escape(title)}</text>']
    for i, b in enumerate(bars):
        y = top + i * row
        w = max(0.0, b.value) / vmax * plot_w
        label = b.label if len(b.label) <= 32 else b.label[:30] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" class="l"><title>{escape(b.label)}</title>{escape(label)}</text>'
        )
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{b.color}"/>')
        text = b.text or f"{b.value:.4g}"
        tag = f' <tspan class="tag">{escape(b.tag)}</tspan>' if b.tag else ""
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" class="v">{escape(text)}{tag}</text>')
    if threshold is not None and threshold > 0:
        x = label_w + threshold / vmax * plot_w
        bottom = top + row * len(bars)
        parts.append(f'<line x1="{x:.1f}" y1="{top - 2}" x2="{x:.1f}" y2="{bottom + 4}" class="thr"/>')
        parts.append(f'<text x="{x + 3:.1f}" y="{bottom + 18}" class="v">{escape(threshold_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def pair_chart(*, title: str, fp32: float | None, quantized: float | None, unit: str, width: int = 230) -> str:
    """Two vertical bars, FP32 vs quantized, labelled with their values."""
    height, top, base, bar_w = 190, 30, 160, 60
    values = [v for v in (fp32, quantized) if v is not None]
    vmax = max([*values, 1e-12])
    parts = [
        _svg_open(width, height, title),
        f'<text x="{width / 2}" y="16" text-anchor="middle" class="t">{escape(title)}</text>',
    ]
    for i, (name, value, color) in enumerate((("FP32", fp32, FP32_COLOR), ("quantized", quantized, QUANT_COLOR))):
        x = 30 + i * (bar_w + 40)
        if value is None:
            parts.append(f'<text x="{x + bar_w / 2}" y="{base - 6}" text-anchor="middle" class="v">n/a</text>')
        else:
            h = value / vmax * (base - top - 16)
            parts.append(f'<rect x="{x}" y="{base - h:.1f}" width="{bar_w}" height="{h:.1f}" fill="{color}"/>')
            parts.append(
                f'<text x="{x + bar_w / 2}" y="{base - h - 4:.1f}" text-anchor="middle" class="v">{escape(_num(value))}{escape(unit)}</text>'
            )
        parts.append(f'<text x="{x + bar_w / 2}" y="{base + 16}" text-anchor="middle" class="l">{name}</text>')
    parts.append(f'<line x1="20" y1="{base}" x2="{width - 10}" y2="{base}" class="axis"/>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(
    *, title: str, edges: Sequence[float], fp32: Sequence[int], quantized: Sequence[int], width: int = 720
) -> str:
    """Two overlaid histograms sharing bins: FP32 filled, quantized as a step line."""
    height, left, top, bottom = 240, 50, 30, 200
    plot_w = width - left - 20
    n = len(fp32)
    if n == 0 or len(edges) != n + 1 or len(quantized) != n:
        return ""
    cmax = max(list(fp32) + list(quantized) + [1])
    bw = plot_w / n
    parts = [_svg_open(width, height, title), f'<text x="0" y="16" class="t">{escape(title)}</text>']
    for i, c in enumerate(fp32):
        h = c / cmax * (bottom - top)
        parts.append(
            f'<rect x="{left + i * bw:.1f}" y="{bottom - h:.1f}" width="{max(bw - 1, 0.5):.1f}" height="{h:.1f}" fill="{FP32_COLOR}" fill-opacity="0.55"/>'
        )
    points = []
    for i, c in enumerate(quantized):
        y = bottom - c / cmax * (bottom - top)
        points.append(f"{left + i * bw:.1f},{y:.1f} {left + (i + 1) * bw:.1f},{y:.1f}")
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{QUANT_COLOR}" stroke-width="2"/>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" class="axis"/>')
    for frac in (0.0, 0.5, 1.0):
        x = left + frac * plot_w
        value = edges[0] + frac * (edges[-1] - edges[0])
        parts.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" class="v">{escape(_num(value))}</text>')
    lx = left + plot_w - 180
    parts.append(
        f'<rect x="{lx}" y="{top}" width="12" height="12" fill="{FP32_COLOR}" fill-opacity="0.55"/><text x="{lx + 16}" y="{top + 11}" class="v">FP32</text>'
    )
    parts.append(
        f'<line x1="{lx + 70}" y1="{top + 6}" x2="{lx + 84}" y2="{top + 6}" stroke="{QUANT_COLOR}" stroke-width="2"/><text x="{lx + 88}" y="{top + 11}" class="v">quantized</text>'
    )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{bottom + 34}" text-anchor="middle" class="l">raw output value</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Point:
    label: str
    x: float
    y: float
    color: str = QUANT_COLOR
    highlight: bool = False
    """Drawn larger, outlined and labelled (e.g. a Pareto-optimal candidate)."""


def scatter_chart(
    points: Sequence[Point],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 720,
    height: int = 360,
    line: bool = True,
) -> str:
    """Points on linear axes from zero; highlighted points are labelled and, with ``line``, joined in x order."""
    left, right, top, bottom = 64, 24, 30, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    xmax = max([p.x for p in points] + [1e-12]) * 1.08
    ymin = min([p.y for p in points] + [0.0])
    ymax = max([p.y for p in points] + [1e-12])
    span = (ymax - ymin) * 1.1 or 1.0

    def at(p: Point) -> tuple[float, float]:
        return left + p.x / xmax * plot_w, top + plot_h - (p.y - ymin) / span * plot_h

    parts = [_svg_open(width, height, title), f'<text x="0" y="16" class="t">{escape(title)}</text>']
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"/>')
    for frac in (0.0, 0.5, 1.0):
        x = left + frac * plot_w
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle" class="v">{_num(frac * xmax)}</text>'
        )
        y = top + plot_h - frac * plot_h
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="v">{_num(ymin + frac * span)}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" class="l">{escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="12" y="{top + plot_h / 2:.1f}" transform="rotate(-90 12 {top + plot_h / 2:.1f})" text-anchor="middle" class="l">{escape(y_label)}</text>'
    )
    front = sorted((p for p in points if p.highlight), key=lambda p: p.x)
    if line and len(front) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (at(p) for p in front))
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{OK_COLOR}" stroke-width="1.5" stroke-dasharray="4 3"/>'
        )
    for p in points:
        x, y = at(p)
        radius, stroke = (6, ' stroke="#1f2933" stroke-width="1.5"') if p.highlight else (4, "")
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{p.color}"{stroke}><title>{escape(p.label)}</title></circle>'
        )
        if p.highlight:
            parts.append(f'<text x="{x + 8:.1f}" y="{y - 6:.1f}" class="v">{escape(p.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_open(width: int, height: int, title: str) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"
