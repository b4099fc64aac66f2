"""Verdicts from items (facts, neurons, positions) of one pretrained model, where seeds do not apply.

The interval is a 95% percentile bootstrap over the items (`analysis.bootstrap.bootstrap_mean`);
the verdict is `verdict.decide`'s (supported when the whole interval clears the threshold and
every requirement holds; partly supported when only the mean clears it, or a requirement fails;
not supported otherwise). Fewer than `MIN_ITEMS` items make it indicative.
"""

from __future__ import annotations

from collections.abc import Sequence

from ffnlab.experiments.verdict import decide
from ffnlab.results import INDICATIVE, Criterion, Estimate

MIN_ITEMS = 10


def item_estimate(quantity: str, mean: float, low: float, high: float, unit: str = "") -> Estimate:
    """An estimate whose interval is a bootstrap over items (no per-seed values)."""
    return Estimate(quantity, mean, low, high, [], unit)


def decide_items(c: Criterion, e: Estimate, n: int, items: str,
                 requirements: Sequence[tuple[bool, str]] = ()) -> tuple[str, str]:
    """(verdict, reason) for `e`, bootstrapped over `n` `items`, under `c` (`verdict.decide`'s rule)."""
    verdict, reason = decide(c, e, requirements, over=f"{items}, bootstrap", n=n)
    if n < MIN_ITEMS:
        return INDICATIVE + verdict, reason + f" (indicative: {n} {items}; a verdict needs >= {MIN_ITEMS})"
    return verdict, reason
