"""Verdicts from seeds: a mean with a 95% t-interval against a pre-registered threshold.

    supported         the whole interval clears the threshold in the stated direction
                      (and every stated requirement holds)
    partly supported  the mean clears it but the interval does not, or a stated requirement
                      fails, or the threshold is missed but a stated partial condition holds
    not supported     otherwise

With one seed the interval is the point itself; the reason says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ffnlab.results import Criterion, Estimate

# two-sided 95% quantiles of Student's t by degrees of freedom (no scipy dependency)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


def t975(df: int) -> float:
    """The 97.5% quantile of t with `df` degrees of freedom (the next tabulated df below)."""
    if df < 1:
        raise ValueError("t quantile needs df >= 1")
    return _T975[max(k for k in _T975 if k <= df)] if df <= 120 else 1.960


def estimate(quantity: str, values: Sequence[float], unit: str = "") -> Estimate:
    """Mean and 95% t-interval of per-seed `values` (n = 1: the interval is the point)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError(f"no values for {quantity}")
    n, mean = len(vals), sum(vals) / len(vals)
    if n == 1:
        return Estimate(quantity, mean, mean, mean, vals, unit)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return Estimate(quantity, mean, mean - half, mean + half, vals, unit)


def _clears(value: float, c: Criterion) -> bool:
    return value > c.threshold if c.direction == ">" else value < c.threshold


def decide(c: Criterion, e: Estimate, requirements: Sequence[tuple[bool, str]] = (),
           partial: tuple[bool, str] | None = None, over: str = "seeds", n: int | None = None) -> tuple[str, str]:
    """(verdict, reason) for estimate `e` under criterion `c`.

    `requirements` must all hold for "supported" (else it is "partly supported");
    `partial` is a stated condition that lifts a missed threshold to "partly supported";
    `over` names what the interval is over (e.g. "facts, bootstrap" when `e` comes from one), and
    `n` how many of them (default: the estimate's per-seed values).
    """
    if c.direction not in (">", "<"):
        raise ValueError(f"criterion direction must be '>' or '<', got {c.direction!r}")
    n = len(e.per_seed) if n is None else n
    far, near = (e.ci_low, e.ci_high) if c.direction == ">" else (e.ci_high, e.ci_low)
    interval = (f"{e.quantity} = {e.mean:.4g} (95% CI {e.ci_low:.4g} to {e.ci_high:.4g}, {n} {over})"
                if n > 1 else f"{e.quantity} = {e.mean:.4g} (one seed: the interval is the point, no spread known)")
    target = f"{c.direction} {c.threshold:g}"
    failed = [text for ok, text in requirements if not ok]
    if _clears(far, c) and _clears(near, c):
        if failed:
            return "partly supported", f"{interval} clears {target}, but not: {'; '.join(failed)}"
        return "supported", f"{interval} clears {target}" + (
            f"; and {'; '.join(t for _, t in requirements)}" if requirements else "")
    if _clears(e.mean, c):
        return "partly supported", f"the mean of {interval} clears {target} but the interval does not"
    if partial is not None and partial[0]:
        return "partly supported", f"{interval} misses {target}; but {partial[1]}"
    return "not supported", f"{interval} misses {target}"
