"""Figures from `Result.series`: matplotlib drawn to inline SVG, text kept as text.

Every figure gets its axis labels (with units, as the experiment wrote them), a legend, and
error bars from `Line.err` (half-width of the 95% CI across seeds). Ids inside each SVG are
prefixed with the figure's id so that several SVGs can live in one HTML page.
"""

from __future__ import annotations

import io
import math
import re

import matplotlib

matplotlib.use("Agg")  # no display; must precede any pyplot import elsewhere in the process

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from ffnlab.results import Series  # noqa: E402

_STYLE = {
    "svg.fonttype": "none",  # text stays text: small, searchable, and uses the page's font
    "svg.hashsalt": "ffnlab",  # deterministic ids, so re-rendering the same results is byte-stable
    "font.family": "sans-serif",
    "font.size": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def is_empty(series: Series) -> bool:
    """True when there is nothing finite to draw."""
    return not any(_finite(y) for ln in series.lines for y in ln.y)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def svg(series: Series, fig_id: str) -> str:
    """The figure as an `<svg>` element (no XML prolog), scaled by CSS, ids prefixed by `fig_id`."""
    with matplotlib.rc_context(_STYLE):
        if series.kind == "heatmap":
            fig = Figure(figsize=(5.4, 1.6 + 0.22 * len(series.lines)), layout="constrained")
            ax = fig.subplots()
            _heatmap(fig, ax, series)
            return _inline(_svg_text(fig, series), fig_id, series.title)
        rows = (len(series.lines) + 2) // 3  # legend rows below the axes
        fig = Figure(figsize=(5.4, 3.1 + 0.2 * rows), layout="constrained")
        ax = fig.subplots()
        _draw(ax, series)
        ax.set_xlabel(series.x_label)
        ax.set_ylabel(series.y_label)
        if series.log_x:
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis)
        if series.log_y:
            ax.set_yscale("log")
            _plain_log_ticks(ax.yaxis)
        labelled = [ln for ln in series.lines if ln.label]
        if labelled:
            fig.legend(loc="outside lower center", ncols=min(3, len(labelled)), frameon=False, fontsize=9)
    return _inline(_svg_text(fig, series), fig_id, series.title)


def _svg_text(fig: Figure, series: Series) -> str:
    with matplotlib.rc_context(_STYLE):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def _heatmap(fig: Figure, ax: Axes, series: Series) -> None:
    """kind="heatmap": one row per line (its label), columns at the lines' x, colour = y (NaN blank)."""
    import numpy as np

    xs = sorted({x for ln in series.lines for x in ln.x})
    grid = np.full((len(series.lines), len(xs)), np.nan)
    for r, ln in enumerate(series.lines):
        for x, y in zip(ln.x, ln.y):
            grid[r, xs.index(x)] = y if _finite(y) else np.nan
    lo = max(-1.0, float(np.nanmin(grid))) if np.isfinite(grid).any() else 0.0
    hi = max(lo + 1e-9, float(np.nanmax(grid))) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest", vmin=lo, vmax=hi)
    ax.set_yticks(range(len(series.lines)), [ln.label for ln in series.lines], fontsize=7.5)
    step = max(1, len(xs) // 15)
    ax.set_xticks(range(0, len(xs), step), [f"{xs[i]:g}" for i in range(0, len(xs), step)])
    ax.set_xlabel(series.x_label)
    ax.grid(False)
    fig.colorbar(image, ax=ax, shrink=0.8, label=series.y_label)


def _draw(ax: Axes, series: Series) -> None:
    n = max(1, len(series.lines))
    if series.kind == "bar":
        xs = sorted({x for ln in series.lines for x in ln.x})
        gaps = [b - a for a, b in zip(xs, xs[1:])] or [1.0]
        width = 0.8 * min(gaps) / n
    for i, ln in enumerate(series.lines):
        color, marker = _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)]
        err = ln.err if ln.err and len(ln.err) == len(ln.y) else None
        if series.kind == "bar":
            x = [v + (i - (n - 1) / 2) * width for v in ln.x]
            ax.bar(x, ln.y, width=width, yerr=err, capsize=2, color=color, label=ln.label or None,
                   error_kw={"elinewidth": 0.8})
        else:
            style = "none" if series.kind == "scatter" else "-"
            ax.errorbar(ln.x, ln.y, yerr=err, color=color, marker=marker, markersize=3.5, linestyle=style,
                        linewidth=1.4, capsize=2.5 if err else 0, elinewidth=0.8, label=ln.label or None)


def _plain_log_ticks(axis: Axis) -> None:
    """Tick labels like 64, 256, 0.01 instead of 2×10⁰; minor labels too when the range is narrow."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = axis.get_view_interval()
    if lo > 0 and hi / lo < 30:
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


_ID = re.compile(r'\bid="([^"]+)"')


def _inline(text: str, prefix: str, title: str) -> str:
    start = text.index("<svg")
    body = text[start:]
    # drop the RDF metadata (namespace URLs only) and the global `*{...}` style rule, which
    # inline would apply to the whole page; the page's CSS sets the same stroke style
    body = re.sub(r"<metadata>.*?</metadata>\s*", "", body, flags=re.S)
    body = re.sub(r"<style[^>]*>.*?</style>\s*", "", body, flags=re.S)
    ids = set(_ID.findall(body))
    body = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', body)
    # references to those ids: url(#x), href="#x", xlink:href="#x"
    body = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})" if m.group(1) in ids
                  else m.group(0), body)
    body = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"' if m.group(1) in ids
                  else m.group(0), body)
    # fixed pt sizes -> the viewBox alone, so CSS can scale the figure to the column width
    body = re.sub(r'<svg([^>]*?)\swidth="[^"]*"\sheight="[^"]*"', r"<svg\1", body, count=1)
    label = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return body.replace("<svg", f'<svg role="img" aria-label="{label}"', 1)
