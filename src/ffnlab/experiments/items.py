"""Verdicts from items (facts, neurons, positions) of one pretrained model, where seeds do not apply.

The interval is a 95% percentile bootstrap over the items (`analysis.bootstrap.bootstrap_mean`);
the verdict follows the same rule as `verdict.decide`: supported when the whole interval clears
the threshold and every requirement holds; partly supported when only the mean clears it, or a
requirement fails; not supported otherwise. Fewer than `MIN_ITEMS` items make it indicative.
"""

from __future__ import annotations

from collections.abc import Sequence

from ffnlab.results import INDICATIVE, Criterion, Estimate

MIN_ITEMS = 10


def item_estimate(quantity: str, mean: float, low: float, high: float, unit: str = "") -> Estimate:
    """An estimate whose interval is a bootstrap over items (no per-seed values)."""
    return Estimate(quantity, mean, low, high, [], unit)


def _clears(value: float, c: Criterion) -> bool:
    return value > c.threshold if c.direction == ">" else value < c.threshold


def decide_items(c: Criterion, e: Estimate, n: int, items: str,
                 requirements: Sequence[tuple[bool, str]] = ()) -> tuple[str, str]:
    """(verdict, reason) for `e`, bootstrapped over `n` `items`, under `c`."""
    if c.direction not in (">", "<"):
        raise ValueError(f"criterion direction must be '>' or '<', got {c.direction!r}")
    interval = f"{e.quantity} = {e.mean:.4g} (95% bootstrap CI {e.ci_low:.4g} to {e.ci_high:.4g} over {n} {items})"
    target = f"{c.direction} {c.threshold:g}"
    failed = [text for ok, text in requirements if not ok]
    if _clears(e.ci_low, c) and _clears(e.ci_high, c):
        if failed:
            verdict, reason = "partly supported", f"{interval} clears {target}, but not: {'; '.join(failed)}"
        else:
            verdict, reason = "supported", f"{interval} clears {target}" + (
                f"; and {'; '.join(t for _, t in requirements)}" if requirements else "")
    elif _clears(e.mean, c):
        verdict, reason = "partly supported", f"the mean of {interval} clears {target} but the interval does not"
    else:
        verdict, reason = "not supported", f"{interval} misses {target}"
    if n < MIN_ITEMS:
        return INDICATIVE + verdict, reason + f" (indicative: {n} {items}; a verdict needs >= {MIN_ITEMS})"
    return verdict, reason
