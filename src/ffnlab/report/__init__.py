"""The study report: one self-contained HTML page rendered from stored results only.

    from ffnlab.report import render_report
    path = render_report("results")          # -> results/report/index.html

The page opens with the answer to "what does the FFN after attention do?", composed from the
experiments' verdicts, then shows one section per claim (C1–C8) with method, figures, numbers
with confidence intervals, verdict, published anchors and caveats, and ends with what is needed
to reproduce every section. Nothing is recomputed here.
"""

from __future__ import annotations

from pathlib import Path

from ffnlab.report.load import StoredStudy, load_study
from ffnlab.report.page import render_page
from ffnlab.results import atomic_write_text, results_dir

__all__ = ["StoredStudy", "load_study", "render_page", "render_report", "report_path"]


def report_path(results: str | Path | None = None) -> Path:
    return results_dir(results) / "report" / "index.html"


def render_report(results: str | Path | None = None, mode: str | None = None, out: str | Path | None = None) -> Path:
    """Render the stored results (of `mode`, or each experiment's fullest) to one HTML file."""
    study = load_study(results, mode)
    path = Path(out) if out else report_path(results)
    atomic_write_text(path, render_page(study))
    path.chmod(0o644)  # a page to open and share (the atomic write's temporary file is private)
    return path
