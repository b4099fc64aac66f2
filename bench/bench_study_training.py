"""The study's training on a CPU: an experiment's runs one after another on all idle cores, against
the same runs side by side on single-thread worker processes (`experiments.common.train_ahead`).

Quick-size models (d=64, 4 layers, 16x128 character tokens a step), four variants, same schedules;
each way starts from an empty results directory. The ratio is what `make study` gains from training
ahead; it needs an idle machine (the load average is printed beside it).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ffnlab.experiments.common import base_model, data, few_threads, train_ahead, train_config, train_run
from ffnlab.experiments.registry import Context


def jobs(ctx: Context, steps: int) -> list:
    base = base_model(ctx, data(ctx).vocab_size)
    variants = [base, base.with_ffn(kind="none"), base.with_ffn(kind="linear"), base.with_ffn(ratio=1.0)]
    schedule = train_config(ctx, 0, steps=steps, lr=1e-2, min_lr=1e-3)
    return [(cfg, schedule, f"bench {i}") for i, cfg in enumerate(variants)]


def run(quick: bool = True) -> dict:
    steps, cores = (60 if quick else 300), len(os.sched_getaffinity(0))
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
        ahead = time.perf_counter() - t0
    n = len(jobs(seq_ctx, steps))
    if cores < 2:
        return {"notes": ["one core: nothing is trained ahead"], "sequential_s": sequential}
    return {
        "tables": [{"title": f"{n} quick-size runs of {steps} steps, {cores} cores",
                    "columns": ["way", "processes x threads", "wall s", "speed-up"],
                    "rows": [["one after another", f"1 x {cores}", sequential, 1.0],
                             ["trained ahead", f"{min(cores, n)} x 1", ahead,
                              sequential / ahead]]}],
        "notes": [f"1-minute load average at start: {load:.2f} (an idle machine reads near 0)"],
        "sequential_s": sequential, "ahead_s": ahead, "speedup": sequential / ahead, "load": load,
    }
