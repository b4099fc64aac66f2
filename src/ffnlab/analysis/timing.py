"""Wall time of a block's sub-layers, and how it grows (claim C1).

Timing on a shared machine is noisy, so every measurement here is interleaved and repeated:
one repeat times every length (or batch size) once, attention and FFN alternately and in an
order that rotates between repeats; each entry of a repeat is the median of `inner` calls. A
fit is made per repeat, so that the repeats give a t-interval for the slope. On CUDA the
device is synchronised around each call.

    loglog_slope   d log(time) / d log(T): 1 = linear in T (constant cost per token), 2 = quadratic
    quadratic_share  least squares time = a + b T + c T^2; the share c T^2 / fit at the largest T
    crossover      the first T where attention takes longer than the FFN (log-interpolated)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ffnlab.device import autocast


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], inner: int, device: torch.device) -> float:
    """Median seconds of `inner` calls of `fn`."""
    times = []
    for _ in range(inner):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(calls: dict[str, Callable[[], object]], reps: int, inner: int,
                device: torch.device) -> dict[str, list[float]]:
    """Seconds per repeat of each named call; every repeat runs all calls, in an order rotated per repeat,
    after one warm-up pass over all of them (kernel selection, allocation)."""
    names = list(calls)
    for name in names:
        calls[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(timed(calls[name], inner, device))
    return out


@torch.no_grad()
def sublayer_times(block: nn.Module, d_model: int, shapes: Sequence[tuple[int, int]], reps: int, inner: int,
                   precision: str = "fp32") -> dict[tuple[int, int], dict[str, list[float]]]:
    """{(B, T): {"attention": seconds per repeat, "ffn": ...}} for one pre-LN block's sub-layers (each with
    its norm), on inputs (B, T, D) of random values, on the block's device."""
    device = next(block.parameters()).device
    gen = torch.Generator().manual_seed(0)
    inputs = {s: torch.randn(*s, d_model, generator=gen).to(device) for s in shapes}
    calls = {}
    for s, x in inputs.items():
        calls[(s, "attention")] = lambda x=x: block.attn(block.ln1(x))
        calls[(s, "ffn")] = lambda x=x: block.ffn(block.ln2(x))
    with autocast(device, precision):
        raw = interleaved(calls, reps, inner, device)
    return {s: {"attention": raw[(s, "attention")], "ffn": raw[(s, "ffn")]} for s in shapes}


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.mean(lx), statistics.mean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def quadratic_share(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least squares y = a + b x + c x^2; the share of the fit at the largest x that the x^2 term makes
    (0: linear growth; close to 1: quadratic). Can be negative when the fit curves down."""
    top = max(xs)
    a = torch.tensor([[1.0, x / top, (x / top) ** 2] for x in xs], dtype=torch.float64)
    coef = torch.linalg.lstsq(a, torch.tensor(ys, dtype=torch.float64)[:, None]).solution[:, 0]
    fit_top = float(coef.sum())
    return float(coef[2]) / fit_top if fit_top > 0 else float("nan")


def crossover(times: Sequence[tuple[int, float, float]]) -> float | None:
    """First length where attention takes longer than the FFN, from (T, attention s, FFN s) in increasing T,
    log-interpolated between grid points; None if attention never does within the grid."""
    for (t0, a0, f0), (t1, a1, f1) in zip(times, times[1:]):
        if a0 > f0:
            return float(t0)
        if a1 > f1:
            r0, r1 = math.log(a0 / f0), math.log(a1 / f1)
            return float(math.exp(math.log(t0) + (math.log(t1) - math.log(t0)) * (-r0) / (r1 - r0)))
    return float(times[0][0]) if times and times[0][1] > times[0][2] else None
