"""Options shared by several commands (`run`, `study`; --device everywhere a model runs); not a subcommand."""

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
    add_device_option(parser)


def _device(name: str) -> str:
    from ffnlab.device import DEVICES, resolve_device
    from ffnlab.errors import FFNLabError, unknown

    try:
        if name.split(":")[0] not in DEVICES:  # meta (shapes only) is for Python, not for runs
            raise unknown("device", name, DEVICES)
        resolve_device(name)
    except FFNLabError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """--device auto|cpu|cuda|mps; a device that is not here is a usage error (exit 2)."""
    parser.add_argument("--device", default="auto", metavar="DEVICE", type=_device,
                        help="where models run: auto (cuda, else mps, else cpu; default), cpu, cuda[:N] or mps")


def add_nproc_option(parser: argparse.ArgumentParser, what: str) -> None:
    """--nproc N: relaunch the command in N processes through torchrun's engine (`relaunch`)."""
    parser.add_argument("--nproc", type=_positive, metavar="N", help=what)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def relaunch(args: argparse.Namespace) -> int:
    """Run the same command line, without --nproc, in `args.nproc` processes (`ffnlab.distributed.launch`)."""
    from ffnlab.distributed import launch

    argv, skip = [], False
    for arg in args.argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            argv.append(arg)
    return launch(args.nproc, argv)
