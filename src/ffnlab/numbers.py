"""Number formatting shared by the HTML report, the study's terminal summary and the experiments' statements.

A module of its own (not in `ffnlab.report`) so that an experiment using it does not take the whole report
into its code fingerprint.
"""

from __future__ import annotations

import math
from typing import Any

from ffnlab.results import Estimate


def num(x: Any, digits: int = 3) -> str:
    """Ints with thousands separators, floats to `digits` significant digits, the rest as text."""
    if isinstance(x, bool) or x is None:
        return "—" if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
            return f"{x:.{digits - 1}e}"
        if x == int(x) and abs(x) < 1e6:
            return f"{int(x):,}" if abs(x) >= 1000 else f"{x:g}"
        return f"{x:.{digits}g}"
    return str(x)


def has_interval(e: Estimate) -> bool:
    """Seeds or a bootstrap gave an interval (an exact count has none)."""
    return e.ci_low != e.ci_high or len(e.per_seed) > 1


def estimate(e: Estimate) -> str:
    """`0.412 [0.398, 0.427] nats (3 seeds)`; no interval for a single exact value."""
    unit = f" {e.unit}" if e.unit else ""
    n = len(e.per_seed)
    seeds = f" ({n} seed{'s' if n != 1 else ''})" if n else ""
    if has_interval(e):
        return f"{num(e.mean)} [{num(e.ci_low)}, {num(e.ci_high)}]{unit}{seeds}"
    return f"{num(e.mean)}{unit}{seeds}"
