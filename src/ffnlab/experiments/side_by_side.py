"""Independent calls of an experiment run side by side, one single-thread worker process each.

Language-model runs get this from `common.train_ahead`. C8's synthetic tasks train chains of runs
instead -- a capacity sweep picks its next point from the points it has -- so what a worker runs here
is a call (one run, or a whole chain) that leaves its runs in the store. The experiment then makes the
same calls in turn and finds every run there: its numbers and `ctx.trained` are what it would have got
alone, and a call that failed in a worker fails again in the experiment, with its own message.

Only on a CPU with two or more idle cores (see ffnlab.threads); elsewhere (a GPU, one idle core)
nothing happens and the experiment trains in turn. Models this small keep a thread busy with
Python and dispatch rather than arithmetic: a training step of C8's full capacity models takes
7-8 ms on one thread and hardly less on two (6.8-8.3 ms, measured interleaved on 2 idle cores),
so two single-thread workers get through nearly twice the work.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ffnlab.device import resolve_device
from ffnlab.experiments.registry import Context
from ffnlab.threads import default_threads


@dataclass(frozen=True)
class Call:
    """`fn(ctx, *args)`, once the calls at indices `after` (earlier in the list) have finished.
    `fn` is a module-level function (a worker process imports it); what it returns is dropped."""

    fn: Callable[..., object]
    args: tuple = ()
    after: tuple[int, ...] = ()


def ahead(ctx: Context, calls: Sequence[Call], desc: str, workers: int | None = None) -> None:
    """Make `calls` in worker processes, `workers` at a time (default: the idle cores), each as soon
    as the calls it comes `after` have finished; among the calls that may start, the earliest in the
    list starts first. A call that fails is left (with those after it) for the experiment to make."""
    for i, call in enumerate(calls):
        if any(not 0 <= j < i for j in call.after):
            raise ValueError(f"call {i} must come after earlier calls only, got {call.after}")
    workers = workers or default_threads()
    if workers < 2 or len(calls) < 2 or resolve_device(ctx.device).type != "cpu":
        return
    quiet = dataclasses.replace(ctx, progress=False, trained=[])
    n = min(workers, len(calls))
    waiting, done, failed = list(range(len(calls))), set(), set()
    running: dict[Future, int] = {}
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool, \
            tqdm(total=len(calls), desc=f"{desc}, {n} at a time", unit="call", disable=not ctx.progress,
                 dynamic_ncols=True) as bar:
        try:
            while waiting or running:
                for i in [i for i in waiting if failed.intersection(calls[i].after)]:
                    waiting.remove(i)
                    failed.add(i)
                    bar.update()
                ready = [i for i in waiting if done.issuperset(calls[i].after)]
                for i in ready[:n - len(running)]:  # at most n in flight: the list order is the priority
                    waiting.remove(i)
                    running[pool.submit(_call, calls[i].fn, quiet, calls[i].args)] = i
                if not running:
                    continue  # calls were skipped after a failure; the loop re-checks what is left
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    (failed if f.exception() is not None else done).add(running.pop(f))
                    bar.update()
        except BaseException:
            for f in running:
                f.cancel()
            raise


def _call(fn: Callable[..., object], ctx: Context, args: tuple) -> None:
    torch.set_num_threads(1)
    fn(ctx, *args)
