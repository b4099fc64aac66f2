"""`ffnlab run NAME`: run one experiment (or reuse its stored result) and print its verdict."""

from __future__ import annotations

import argparse

NAME = "run"
HELP = "run one experiment by name (see `ffnlab experiments`) and print its verdict and key numbers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name, e.g. rank-collapse")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="small models and few seeds (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="larger models, >= 3 seeds")
    parser.set_defaults(mode="quick")
    parser.add_argument("--seeds", type=int, metavar="N", help="number of seeds (default: the experiment's)")
    parser.add_argument("--data", metavar="PATH", help="corpus: a text file, directory or glob (default: Shakespeare)")
    parser.add_argument("--results", metavar="DIR", help="results directory (default: $FFNLAB_RESULTS or ./results)")
    parser.add_argument("--rerun", action="store_true", help="recompute even if a stored result matches "
                                                              "(finished training runs are still reused)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def summary(result) -> str:
    """The verdict, the reason and the estimates of a `Result`, as lines of text."""
    lines = [f"{result.name} ({result.claim}, {result.mode}, {len(result.seeds)} seed(s), "
             f"{result.wall_seconds:.1f} s): {result.verdict or 'no verdict'}"]
    if result.criterion is not None:
        c = result.criterion
        lines.append(f"  criterion: {c.quantity} {c.direction} {c.threshold:g} ({c.rule})")
    if result.reason:
        lines.append(f"  reason: {result.reason}")
    for e in result.estimates:
        unit = f" {e.unit}" if e.unit else ""
        lines.append(f"  {e.quantity}: {e.mean:.4g}{unit} [95% CI {e.ci_low:.4g}, {e.ci_high:.4g}]")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ffnlab.experiments.registry import run_experiment

    result = run_experiment(args.name, args.mode, seeds=args.seeds, results=args.results, data=args.data,
                            reuse=not args.rerun, progress=not args.no_progress)
    print(summary(result))
    return 0
