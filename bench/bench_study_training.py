"""The study's training on a CPU: an experiment's runs one after another on all idle cores, against
the same runs side by side on single-thread worker processes.

Language models (`experiments.common.train_ahead`): quick-size models (d=64, 4 layers, 16x128
character tokens a step), four variants, same schedules. C8's capacity models
(`experiments.side_by_side.ahead`): the full size's three models (d 16-28, 2 layers), two seeds,
on its smallest grid point at fewer exposures. Each way starts from an empty results directory. The
ratios are what the study gains from training side by side; they need an idle machine (the load
average is printed beside them).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

from ffnlab.experiments.c8_memorisation import CAPACITY, capacity_models, fit_facts, task_for
from ffnlab.experiments.common import base_model, data, few_threads, train_ahead, train_config, train_run
from ffnlab.experiments.registry import Context
from ffnlab.experiments.side_by_side import Call, ahead


def jobs(ctx: Context, steps: int) -> list:
    base = base_model(ctx, data(ctx).vocab_size)
    variants = [base, base.with_ffn(kind="none"), base.with_ffn(kind="linear"), base.with_ffn(ratio=1.0)]
    schedule = train_config(ctx, 0, steps=steps, lr=1e-2, min_lr=1e-3)
    return [(cfg, schedule, f"bench {i}") for i, cfg in enumerate(variants)]


EXPOSURES = {True: 250, False: 1000}  # C8's runs: long enough that starting the workers (about 2 s) matters little


def capacity_calls(quick: bool) -> list[Call]:
    cap = dataclasses.replace(CAPACITY["full"], exposures=EXPOSURES[quick])
    cfgs = capacity_models(cap, task_for(cap, max(cap.grid)).vocab_size)
    return [Call(fit_facts, (cap, cfg, name, min(cap.grid), seed, cap.lrs[0]))
            for seed in (0, 1) for name, cfg in cfgs.items()]


def capacity_walls(tmp: Path, calls: list[Call], cores: int) -> tuple[float, float]:
    """(one after another on `cores` threads, side by side on `cores` workers) for C8's capacity `calls`."""
    seq_ctx = Context(mode="full", seeds=(0,), results=tmp / "c8-seq", progress=False)
    par_ctx = Context(mode="full", seeds=(0,), results=tmp / "c8-par", progress=False)
    t0 = time.perf_counter()
    with few_threads(cores):
        for call in calls:
            call.fn(seq_ctx, *call.args)
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    ahead(par_ctx, calls, "bench", workers=cores)
    return sequential, time.perf_counter() - t0


def run(quick: bool = True) -> dict:
    steps, cores, c8_calls = (60 if quick else 300), len(os.sched_getaffinity(0)), capacity_calls(quick)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        seq_ctx = Context(mode="quick", seeds=(0,), results=Path(tmp) / "seq", progress=False)
        par_ctx = Context(mode="quick", seeds=(0,), results=Path(tmp) / "par", progress=False)
        task = data(seq_ctx)
        t0 = time.perf_counter()
        with few_threads(cores):
            for cfg, tcfg, name in jobs(seq_ctx, steps):
                train_run(seq_ctx, cfg, tcfg, task, name)
        sequential = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_ahead(par_ctx, data(par_ctx), jobs(par_ctx, steps), sweep=False, workers=cores)
        ahead_s = time.perf_counter() - t0
        c8_seq, c8_par = capacity_walls(Path(tmp), c8_calls, cores) if cores >= 2 else (0.0, 0.0)
    n = len(jobs(seq_ctx, steps))
    if cores < 2:
        return {"notes": ["one core: nothing is trained ahead"], "sequential_s": sequential}
    return {
        "tables": [{"title": f"{n} quick-size runs of {steps} steps, {cores} cores",
                    "columns": ["way", "processes x threads", "wall s", "speed-up"],
                    "rows": [["one after another", f"1 x {cores}", sequential, 1.0],
                             ["trained ahead", f"{min(cores, n)} x 1", ahead_s,
                              sequential / ahead_s]]},
                   {"title": f"{len(c8_calls)} of C8's full capacity runs (smallest N, "
                             f"{EXPOSURES[quick]} exposures), {cores} cores",
                    "columns": ["way", "processes x threads", "wall s", "speed-up"],
                    "rows": [["one after another", f"1 x {cores}", c8_seq, 1.0],
                             ["side by side", f"{cores} x 1", c8_par, c8_seq / c8_par]]}],
        "notes": [f"1-minute load average at start: {load:.2f} (an idle machine reads near 0)"],
        "sequential_s": sequential, "ahead_s": ahead_s, "speedup": sequential / ahead_s, "load": load,
        "c8_sequential_s": c8_seq, "c8_side_by_side_s": c8_par, "c8_speedup": c8_seq / c8_par,
    }
