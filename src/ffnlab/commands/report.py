"""`ffnlab report`: re-render the HTML report from stored results, recomputing nothing."""

from __future__ import annotations

import argparse

from ffnlab.errors import FFNLabError

NAME = "report"
HELP = "render results/report/index.html from the stored results (recomputes nothing)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", metavar="DIR", help="results directory (default: $FFNLAB_RESULTS or ./results)")
    parser.add_argument("--mode", choices=("quick", "full"),
                        help="show only results of this mode (default: each experiment's fullest stored run)")
    parser.add_argument("--out", metavar="FILE", help="where to write the page (default: DIR/report/index.html)")
    parser.add_argument("--publish", metavar="DIR",
                        help="copy the stored results into DIR/results and render DIR/index.html with DIR/PROVENANCE.md "
                             "(e.g. docs/study); replaces DIR only if it is an earlier publication")


def run(args: argparse.Namespace) -> int:
    from ffnlab.report import render_report

    if args.publish:
        from ffnlab.report.publish import publish

        if args.out:
            raise FFNLabError("--out and --publish exclude each other: --publish writes DIR/index.html")
        out = publish(args.results, args.publish, args.mode)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"published: {out}/index.html, results and PROVENANCE.md ({size / 1024:.0f} KiB)")
        return 0

    path = render_report(args.results, args.mode, args.out)
    print(f"report: {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0
