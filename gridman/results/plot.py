"""Pictures of a grid: one curve per XP of a metric's history, as PNG, SVG or HTML.

PNG goes through matplotlib, an optional extra (``pip install 'gridman[plot]'``); without it a
PNG is a UsageError saying so. SVG and HTML are drawn here, with no dependency: the HTML page
is self-contained (inline SVG and CSS, no script, nothing fetched), with a table of each XP's
last and best values. The x axis is the epoch (the entry's 1-based position in the history);
entries without the metric leave a gap in that XP's curve.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError
from .format import fmt_value, lower_is_better, metric_history
from .records import Source

INSTALL_HINT = "pip install 'gridman[plot]' (matplotlib); .html and .svg plots need nothing"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
FORMATS = (".png", ".svg", ".html")
#: Dash patterns: (matplotlib linestyle, SVG stroke-dasharray or "" for solid).
DASHES = (("-", ""), ("--", "7 3"), (":", "2 3"), ("-.", "7 3 2 3"))
#: Point markers, by matplotlib name; _marker_svg draws the same shapes in SVG.
MARKERS = ("o", "s", "^", "D", "v")


@dataclass(frozen=True)
class Style:
    """How one curve is drawn: a colour, a dash pattern (index into DASHES), a marker."""

    color: str
    dash: int
    marker: str


def style(index: int) -> Style:
    """The style of the ``index``-th curve.

    The colour cycles through the 10 of PALETTE; every 10 curves the dash pattern and the
    marker move on too, so two curves never look alike: (colour, dash) alone is unique for
    the first 40 curves (long curves draw no markers), and (colour, dash, marker) repeats
    only after 200 (10 colours x lcm(4 dashes, 5 markers)).
    """
    cycle = index // len(PALETTE)
    return Style(PALETTE[index % len(PALETTE)], cycle % len(DASHES), MARKERS[cycle % len(MARKERS)])


@dataclass(frozen=True)
class Series:
    """One XP's curve: (epoch, value) points, in order."""

    name: str
    sig: str
    points: tuple[tuple[int, float], ...]

    @property
    def last(self) -> Optional[float]:
        return self.points[-1][1] if self.points else None


@dataclass(frozen=True)
class Curves:
    metric: str
    title: str
    series: tuple[Series, ...]


def collect(source: Source, metric: str, title: str = "") -> Curves:
    """The curves of ``metric`` for the XPs of ``source`` that have at least one value.

    Raises UsageError when none has, listing the metrics their histories hold.
    """
    from ..core.config import flatten
    from ..core.link import load_history

    series = []
    seen: dict[str, None] = {}
    for ref in source.refs:
        folder = Path(ref.folder)
        try:
            history = load_history(folder) if folder.exists() else []
        except Exception:  # an unreadable history draws no curve
            continue
        values = metric_history(history, metric)
        points = tuple((i + 1, v) for i, v in enumerate(values) if v is not None)
        if points:
            series.append(Series(ref.name, ref.sig, points))
        for entry in history[-1:]:
            if isinstance(entry, dict):
                seen.update(dict.fromkeys(flatten(entry)))
    if not series:
        raise UsageError(
            f"no selected XP has a history of {metric!r}",
            f"metrics in their histories: {', '.join(seen) or 'none yet'}",
        )
    return Curves(metric, title or metric, tuple(series))


def write(curves: Curves, path: Path, width: int = 800, height: int = 500) -> None:
    """Write ``path`` as its extension says: .png (matplotlib), .svg or .html."""
    if width < 100 or height < 100:
        raise UsageError(f"a plot needs at least 100x100 pixels, got {width}x{height}")
    suffix = path.suffix.lower()
    if suffix == ".png":
        write_png(curves, path, width, height)
    elif suffix == ".svg":
        path.write_text(to_svg(curves, width, height), encoding="utf8")
    elif suffix in (".html", ".htm"):
        path.write_text(to_html(curves, width, height), encoding="utf8")
    else:
        raise UsageError(f"cannot plot to {path.name}", "give a file ending in .png, .svg or .html")


def write_png(curves: Curves, path: Path, width: int, height: int) -> None:
    """A width x height PNG (matplotlib's object API: no pyplot, no global state)."""
    fig = figure(curves, width, height)
    fig.savefig(path, dpi=100, format="png")  # no bbox_inches: exactly width x height


def figure(curves: Curves, width: int, height: int) -> Any:
    """The matplotlib Figure of the curves, width x height pixels at 100 dpi."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise UsageError("PNG plots need matplotlib (not installed)", INSTALL_HINT) from None
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_subplot()
    for index, series in enumerate(curves.series):
        xs = [x for x, _ in series.points]
        ys = [y for _, y in series.points]
        look = style(index)
        marker = look.marker if len(xs) <= 30 else None
        ax.plot(xs, ys, marker=marker, markersize=3, linewidth=1.5, color=look.color,
                linestyle=DASHES[look.dash][0], label=series.name)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(curves.metric)
    ax.set_title(curves.title)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    longest = max(len(s.name) for s in curves.series)
    room = min(0.45, (7 * longest + 80) / width)  # the legend goes right of the axes
    fig.subplots_adjust(left=72 / width, right=1 - room, top=1 - 40 / height,
                        bottom=50 / height)  # fmt: skip
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


# -- SVG -------------------------------------------------------------------------------------
def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:.6g}"


def to_svg(curves: Curves, width: int = 800, height: int = 500) -> str:
    """The chart as an SVG document: axes, ticks, one polyline per XP, a legend."""
    longest = max(len(s.name) for s in curves.series)
    legend_w = min(300, max(110, 7 * longest + 40))
    left, right, top, bottom = 70, legend_w + 20, 40, 50
    plot_w, plot_h = max(10, width - left - right), max(10, height - top - bottom)
    xs = [x for s in curves.series for x, _ in s.points]
    ys = [y for s in curves.series for _, y in s.points]
    x0, x1 = min(xs), max(xs)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = min(ys), max(ys)
    if y0 == y1:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left + plot_w / 2:.1f}" y="22" text-anchor="middle" font-size="15">'
        f"{esc(curves.title)}</text>",
    ]
    for tick in nice_ticks(y0, y1):
        y = py(tick)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#e5e5e5"/>')  # fmt: skip
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    x_ticks = [t for t in nice_ticks(x0, x1) if float(t).is_integer()]
    for tick in x_ticks:
        x = px(tick)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" '
                   'stroke="#f0f0f0"/>')  # fmt: skip
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                   f"{int(tick)}</text>")  # fmt: skip
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#444"/>')  # fmt: skip
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 12}" text-anchor="middle">'
               "epoch</text>")  # fmt: skip
    out.append(f'<text transform="translate(16 {top + plot_h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{esc(curves.metric)}</text>')  # fmt: skip
    for index, series in enumerate(curves.series):
        out.append(_series_svg(series, style(index), px, py))
    out += _legend(curves.series, left + plot_w + 16, top)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _series_svg(
    series: Series, look: Style, px: Callable[[float], float], py: Callable[[float], float]
) -> str:
    esc = html.escape
    segments: list[list[str]] = [[]]
    previous = None
    for x, y in series.points:
        if previous is not None and x != previous + 1:
            segments.append([])  # a gap: epochs without the metric
        segments[-1].append(f"{px(x):.1f},{py(y):.1f}")
        previous = x
    title = f"<title>{esc(series.name)} ({series.sig})</title>"
    parts = [f'<g class="series" data-sig="{esc(series.sig)}" data-name="{esc(series.name)}">',
             title]  # fmt: skip
    for points in segments:
        parts.append(f'<polyline fill="none" stroke="{look.color}" stroke-width="2"'
                     f'{_dash_attr(look)} points="{" ".join(points)}"/>')  # fmt: skip
    if len(series.points) <= 30:
        for x, y in series.points:
            parts.append(_marker_svg(look, px(x), py(y)))
    parts.append("</g>")
    return "".join(parts)


def _dash_attr(look: Style) -> str:
    dash = DASHES[look.dash][1]
    return f' stroke-dasharray="{dash}"' if dash else ""


def _marker_svg(look: Style, x: float, y: float, r: float = 2.5) -> str:
    """One point, in the shape matplotlib draws for ``look.marker``."""
    fill = f'fill="{look.color}"'
    if look.marker == "o":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" {fill}/>'
    if look.marker == "s":
        return f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r}" height="{2 * r}" {fill}/>'
    shapes = {"^": ((0, -1.2), (1.1, 0.9), (-1.1, 0.9)), "v": ((0, 1.2), (1.1, -0.9), (-1.1, -0.9)),
              "D": ((0, -1.3), (1.3, 0), (0, 1.3), (-1.3, 0))}  # fmt: skip
    corners = " ".join(f"{x + dx * r:.1f},{y + dy * r:.1f}" for dx, dy in shapes[look.marker])
    return f'<polygon points="{corners}" {fill}/>'


def _legend(series: Sequence[Series], x: float, y: float) -> list[str]:
    out = []
    for index, item in enumerate(series):
        top = y + index * 18
        look = style(index)
        out.append(f'<line x1="{x:.1f}" x2="{x + 14:.1f}" y1="{top + 2:.1f}" y2="{top + 2:.1f}" '
                   f'stroke="{look.color}" stroke-width="3"{_dash_attr(look)} '
                   'class="legend"/>')  # fmt: skip
        out.append(f'<text x="{x + 20:.1f}" y="{top + 6:.1f}">{html.escape(item.name)}</text>')
    return out


def _css_dash(look: Style) -> str:
    return ("solid", "dashed", "dotted", "dashed")[look.dash]


def to_html(curves: Curves, width: int = 800, height: int = 500) -> str:
    """A self-contained page: the SVG chart and a table of last and best values."""
    esc = html.escape
    lower = lower_is_better(curves.metric)
    rows = []
    for index, series in enumerate(curves.series):
        values = [y for _, y in series.points]
        best = min(values) if lower else max(values)
        look = style(index)
        rows.append(
            f'<tr><td><span class="swatch" style="border-top:3px {_css_dash(look)} '
            f'{look.color}"></span>'
            f"{esc(series.name)}</td><td><code>{esc(series.sig)}</code></td>"
            f"<td>{len(values)}</td><td>{fmt_value(series.last)}</td>"
            f"<td>{fmt_value(best)}</td></tr>"
        )
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(curves.title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;margin-top:1em}"
        "td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}"
        ".swatch{display:inline-block;width:1.4em;height:0;margin-right:.5em;"
        "vertical-align:middle}</style>",
        "</head><body>",
        f"<h1>{esc(curves.title)}</h1>",
        to_svg(curves, width, height),
        f"<table><tr><th>XP</th><th>sig</th><th>points</th><th>last</th>"
        f"<th>best ({'min' if lower else 'max'})</th></tr>",
        *rows,
        "</table>",
        "</body></html>",
        "",
    ])  # fmt: skip
