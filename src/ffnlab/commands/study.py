"""`ffnlab study`: run every experiment of the study (reusing stored results), then render the report."""

from __future__ import annotations

import argparse
import sys

from ffnlab.commands._options import add_run_options

NAME = "study"
HELP = "run all registered experiments (quick or full), record failures, and render results/report/index.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_options(parser)
    parser.add_argument("--only", metavar="NAME", action="append",
                        help="run only this experiment (repeatable); the report still shows all stored results")
    parser.add_argument("--model", metavar="PATH_OR_ID", action="append", default=[],
                        help="add a pretrained model (checkpoint dir, .gguf file, cached org/name or packaged name) "
                             "to the pretrained experiments and the report (repeatable)")


def run(args: argparse.Namespace) -> int:
    from ffnlab.study import run_study, summary_table

    study = run_study(args.mode, results=args.results, data=args.data, only=args.only,
                      progress=not args.no_progress, reuse_stale=args.reuse_stale, device=args.device,
                      models=args.model)
    print()
    print(summary_table(study))
    print()
    print(f"study ({args.mode}): {len(study.outcomes)} experiments, {len(study.failed)} failed, "
          f"wall time {study.wall_seconds:.1f} s")
    print(f"report: {study.report}")
    if study.failed:
        print(f"{len(study.failed)} experiment(s) failed; see the report's 'Failed experiments'", file=sys.stderr)
        return 1
    return 0
