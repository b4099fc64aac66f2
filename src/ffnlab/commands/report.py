"""`ffnlab report`: re-render the HTML report from stored results, recomputing nothing."""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "render results/report/index.html from the stored results (recomputes nothing)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", metavar="DIR", help="results directory (default: $FFNLAB_RESULTS or ./results)")
    parser.add_argument("--mode", choices=("quick", "full"),
                        help="show only results of this mode (default: each experiment's fullest stored run)")
    parser.add_argument("--out", metavar="FILE", help="where to write the page (default: DIR/report/index.html)")


def run(args: argparse.Namespace) -> int:
    from ffnlab.report import render_report

    path = render_report(args.results, args.mode, args.out)
    print(f"report: {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0
