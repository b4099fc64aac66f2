"""The `ffnlab` command: a thin layer of argument parsing over functions callable from Python.

Each subcommand is a module in `ffnlab.commands` with `NAME`, `HELP`, `add_arguments(parser)`
and `run(args) -> int`; they are discovered, so adding one touches no other file.
User errors (`FFNLabError`) print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import pkgutil
import signal
import sys

from ffnlab import commands
from ffnlab.errors import FFNLabError


def _commands() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME"):
            found[module.NAME] = module
    return dict(sorted(found.items()))


def one_line(message: str) -> str:
    """A message as one line, whatever line breaks its cause (or the user's own arguments) held."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        print(f"{self.prog}: error: {one_line(message)}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ffnlab", description="Measure what the FFN after attention does.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in _commands().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def stop_workers_on_sigterm() -> None:
    """On SIGTERM (`kill`), terminate this process's worker processes (the training pools of
    `experiments.common.train_ahead`) before exiting: left running, they keep training and hold
    their runs' directories, so the next study could not train them. Finished runs are kept."""
    def stop(signum, frame):
        for child in multiprocessing.active_children():
            child.terminate()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `--nproc` relaunches
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    stop_workers_on_sigterm()
    try:
        import torch

        from ffnlab.threads import default_threads

        torch.set_num_threads(default_threads())
        return int(args._run(args) or 0)
    except FFNLabError as err:
        print(f"ffnlab {args.command}: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a reader that stopped early (e.g. `| head`)
        sys.stdout = open(os.devnull, "w")  # why: Python's own flush at exit would raise again
        return 0
    except KeyboardInterrupt:
        print(f"ffnlab {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
