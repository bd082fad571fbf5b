"""Plots for the bench's reports, as SVG text: lines over time and histograms, nothing more.

A report needs half a dozen small charts that a browser shows inline and a
Markdown viewer shows as linked files; matplotlib would be a large dependency
for that, so the few shapes are drawn here. Every chart is a `Plot` (a name,
the SVG); `svg_chart` draws lines (and horizontal reference lines) on shared
axes, `svg_histogram` draws counts in bins.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 30, 45
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass(frozen=True)
class Plot:
    name: str        # a file stem: plots/<name>.svg beside report.md
    title: str
    svg: str
    points: int      # data points drawn (0: the chart says there was nothing to draw)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering low..high."""
    if not high > low:
        high = low + 1.0
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e6 or abs(v) < 1e-2:
        return f"{v:.1e}"
    return f"{v:g}" if abs(v) >= 100 else f"{v:.3g}"


class _Axes:
    def __init__(self, x_range, y_range):
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        if not self.x1 > self.x0:
            self.x1 = self.x0 + 1.0
        if not self.y1 > self.y0:
            self.y1 = self.y0 + 1.0

    def x(self, v: float) -> float:
        return LEFT + (v - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)

    def y(self, v: float) -> float:
        return HEIGHT - BOTTOM - (v - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)


def _frame(title: str, xlabel: str, ylabel: str, axes: _Axes) -> list[str]:
    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
           f"<title>{e(title)}</title>",
           f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13">{e(title)}</text>']
    for v in _ticks(axes.x0, axes.x1):
        x = axes.x(v)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" stroke="#eee"/>'
                   f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">{_label(v)}</text>')
    for v in _ticks(axes.y0, axes.y1):
        y = axes.y(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_label(v)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
               f'fill="none" stroke="#444"/>')
    out.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">{e(xlabel)}</text>')
    out.append(f'<text x="14" y="{HEIGHT / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {HEIGHT / 2})">{e(ylabel)}</text>')
    return out


def _legend(names: list[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        y = TOP + 12 + 13 * i
        out.append(f'<rect x="{LEFT + 8}" y="{y - 8}" width="10" height="3" fill="{COLOURS[i % len(COLOURS)]}"/>'
                   f'<text x="{LEFT + 22}" y="{y - 3}">{html.escape(name)}</text>')
    return out


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def svg_chart(name: str, title: str, xlabel: str, ylabel: str, lines: list[tuple[str, list, list]],
              hlines: tuple[tuple[str, float], ...] = (), step: bool = False) -> Plot:
    """Lines (label, xs, ys) on one pair of axes; `hlines` (label, y) dashed across; `step`: hold each value."""
    xs = _finite(x for _, lx, _ in lines for x in lx)
    ys = _finite(y for _, _, ly in lines for y in ly) + [v for _, v in hlines]
    points = sum(len(lx) for _, lx, _ in lines)
    y_low = min(ys + [0.0]) if ys else 0.0
    y_high = max(ys) * 1.05 if ys and max(ys) > 0 else (max(ys) if ys else 1.0)
    axes = _Axes((min(xs), max(xs)) if xs else (0.0, 1.0), (y_low, y_high))
    out = _frame(title, xlabel, ylabel, axes)
    for i, (label, lx, ly) in enumerate(lines):
        pairs = [(x, y) for x, y in zip(lx, ly) if x is not None and y is not None
                 and math.isfinite(x) and math.isfinite(y)]
        if not pairs:
            continue
        coords = []
        for k, (x, y) in enumerate(pairs):
            if step and k:
                coords.append(f"{axes.x(x):.1f},{axes.y(pairs[k - 1][1]):.1f}")
            coords.append(f"{axes.x(x):.1f},{axes.y(y):.1f}")
        colour = COLOURS[i % len(COLOURS)]
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(coords)}"/>')
        if len(pairs) == 1:
            out.append(f'<circle cx="{axes.x(pairs[0][0]):.1f}" cy="{axes.y(pairs[0][1]):.1f}" r="3" fill="{colour}"/>')
    for label, v in hlines:
        y = axes.y(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#555" '
                   f'stroke-dasharray="5,4"/><text x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" '
                   f'text-anchor="end">{html.escape(label)}</text>')
    if not points:
        out.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text>')
    out += _legend([label for label, _, _ in lines])
    out.append("</svg>")
    return Plot(name, title, "\n".join(out), points)


def svg_histogram(name: str, title: str, xlabel: str, values: list[float], bins: int = 20) -> Plot:
    """Counts of `values` in `bins` equal bins from their minimum to their maximum."""
    data = _finite(values)
    low, high = (min(data), max(data)) if data else (0.0, 1.0)
    if not high > low:
        low, high = low - 0.5 * (abs(low) or 1), high + 0.5 * (abs(high) or 1)
    width = (high - low) / bins
    counts = [0] * bins
    for v in data:
        counts[min(bins - 1, int((v - low) / width))] += 1
    axes = _Axes((low, high), (0.0, max(counts + [1]) * 1.05))
    out = _frame(title, xlabel, "count", axes)
    for i, c in enumerate(counts):
        if c:
            x0, x1 = axes.x(low + i * width), axes.x(low + (i + 1) * width)
            out.append(f'<rect x="{x0:.1f}" y="{axes.y(c):.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                       f'height="{axes.y(0) - axes.y(c):.1f}" fill="{COLOURS[0]}"/>')
    if not data:
        out.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text>')
    out.append("</svg>")
    return Plot(name, title, "\n".join(out), len(data))
