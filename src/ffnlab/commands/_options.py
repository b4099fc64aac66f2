"""Options shared by the commands that run experiments (`run`, `study`); not a subcommand itself."""

from __future__ import annotations

import argparse


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--quick/--full, --results, --data and --no-progress."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="small models and few seeds (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the long version: larger models, >= 3 seeds")
    parser.set_defaults(mode="quick")
    parser.add_argument("--results", metavar="DIR", help="results directory (default: $FFNLAB_RESULTS or ./results)")
    parser.add_argument("--data", metavar="PATH", help="corpus: a text file, directory or glob (default: Shakespeare)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--reuse-stale", action="store_true",
                        help="keep stored results produced by other code instead of recomputing them "
                             "(the report marks them stale)")
