"""`ffnlab run NAME`: run one experiment (or reuse its stored result) and print its verdict."""

from __future__ import annotations

import argparse

from ffnlab.commands._options import add_run_options

NAME = "run"
HELP = "run one experiment by name (see `ffnlab experiments`) and print its verdict and key numbers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name, e.g. rank-collapse")
    add_run_options(parser)
    parser.add_argument("--seeds", type=int, metavar="N", help="number of seeds (default: the experiment's)")
    parser.add_argument("--rerun", action="store_true", help="recompute even if a stored result matches "
                                                              "(finished training runs are still reused)")


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
                            reuse=not args.rerun, progress=not args.no_progress, reuse_stale=args.reuse_stale,
                            device=args.device)
    print(summary(result))
    return 0
