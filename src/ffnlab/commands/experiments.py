"""`ffnlab experiments`: list every registered experiment with its claim and version."""

from __future__ import annotations

import argparse

NAME = "experiments"
HELP = "list the experiments of the study (name, claim, version, title, whether a result is stored)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", metavar="DIR", help="results directory (default: $FFNLAB_RESULTS or ./results)")


def run(args: argparse.Namespace) -> int:
    from ffnlab.experiments.registry import MODES, load_all
    from ffnlab.results import results_dir

    root = results_dir(args.results)
    experiments = load_all()
    width = max(len(name) for name in experiments)
    print(f"{'name':<{width}}  claim  ver  stored       title")
    for name, exp in experiments.items():
        stored = ",".join(m for m in MODES if exp.result_path(root, m).exists()) or "-"
        print(f"{name:<{width}}  {exp.claim:<5}  {exp.version:<3}  {stored:<11}  {exp.title}")
    return 0
