"""Percentile bootstrap over items (facts, neurons, sequences): the interval behind every verdict
that rests on one model, where seeds do not apply (Efron & Tibshirani 1993, ch. 13)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def resample_means(x: Tensor, resamples: int = 1000, seed: int = 0, chunk: int = 100) -> Tensor:
    """Means of `resamples` resamples of the rows of `x` (N,) or (N, C): (resamples,) or (resamples, C)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, resamples, chunk):
        idx = torch.randint(len(x), (min(chunk, resamples - i), len(x)), generator=g)
        out.append(x[idx].mean(1))
    return torch.cat(out)


def interval(samples: Tensor) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap samples (non-finite ones left out)."""
    s = samples[torch.isfinite(samples)].double()
    if len(s) == 0:
        return float("nan"), float("nan")
    return float(s.quantile(0.025)), float(s.quantile(0.975))


def bootstrap_mean(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile bootstrap interval over items (the interval is the point for one item)."""
    x = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if len(x) == 0:
        raise ValueError("bootstrap over no items")
    if len(x) < 2:
        return float(x.mean()), float(x.mean()), float(x.mean())
    return float(x.mean()), *interval(resample_means(x, resamples, seed))
