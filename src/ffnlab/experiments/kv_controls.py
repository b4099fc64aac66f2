"""The verdict of c7-kv-memories from per-neuron and per-position controls (`analysis.memory_controls`).

    layer_controls  one layer's measurements: agreement per neuron, shallow shares vs random positions,
                    promotion scores vs frequency-matched tokens
    judge_kv        criterion, requirements and the elimination finding, with 95% bootstrap intervals
                    over neurons (agreement, shallow shares) and over changed positions (promotion)
    layer_rows      per-layer numbers with intervals, for the tables and figures

Kept apart from the experiment so every outcome can be reached from synthetic numbers in a test.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.analysis.bootstrap import interval
from ffnlab.analysis.bootstrap import resample_means as bootstrap
from ffnlab.analysis.memory_controls import NeuronAgreement, PromotionScores
from ffnlab.experiments.items import decide_items, item_estimate
from ffnlab.results import Criterion, Estimate

KV_CRITERION = Criterion(
    "upper-third key-value agreement / shuffled-pair agreement", ">", 2.0,
    "95% bootstrap interval over the upper third's neurons above 2; requirements, each a 95% bootstrap interval "
    "above 0: upper- minus lower-third agreement (over neurons); lower- minus upper-third excess of the shallow "
    "share over random positions (over neurons: shallow patterns fall with depth); promoted tokens' minus "
    "frequency-matched tokens' sub-update z in the upper third (over changed positions). Eliminated tokens vs "
    "frequency-matched ones are reported as a finding beside Geva et al. 2022's ≈0, not required")


@dataclass
class LayerControls:
    layer: int
    agreement: NeuronAgreement
    shallow: Tensor  # (F,) share of the neuron's top-k triggers with a shared surface pattern
    shallow_random: Tensor  # (F,) the same share for k random positions
    promotion: PromotionScores


def thirds(n_layers: int) -> tuple[range, range]:
    third = max(1, n_layers // 3)
    return range(third), range(n_layers - third, n_layers)


def _cat(xs: list[Tensor]) -> Tensor:
    return torch.cat(xs) if xs else torch.zeros(0, dtype=torch.float64)


def _diff(a: Tensor, b: Tensor, resamples: int, seed: int) -> tuple[float, float, float]:
    """Mean of a minus mean of b, two independent groups of items, with a bootstrap interval."""
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan"), float("nan")
    samples = bootstrap(a, resamples, seed) - bootstrap(b, resamples, seed + 1)
    return (float(a.mean() - b.mean()), *interval(samples))


def _mean(x: Tensor, resamples: int, seed: int) -> tuple[float, float, float]:
    return (float(x.mean()), *interval(bootstrap(x, resamples, seed))) if len(x) else (float("nan"),) * 3


def judge_kv(layers: list[LayerControls], resamples: int = 1000) -> tuple[list[Estimate], str, str]:
    low, high = thirds(len(layers))
    up = [layers[i] for i in high]
    lo = [layers[i] for i in low]
    hit_up, shuf_up = _cat([c.agreement.hit for c in up]), _cat([c.agreement.shuffled for c in up])
    pair = bootstrap(torch.stack([hit_up, shuf_up], 1), resamples, seed=0)
    ratio = (float(hit_up.mean() / shuf_up.mean().clamp_min(1e-12)),
             *interval(pair[:, 0] / pair[:, 1].clamp_min(1e-12)))
    rise = _diff(hit_up, _cat([c.agreement.hit for c in lo]), resamples, seed=10)
    excess = lambda cs: _cat([c.shallow - c.shallow_random for c in cs])  # noqa: E731
    fall = _diff(excess(lo), excess(up), resamples, seed=20)
    promoted = _mean(_cat([c.promotion.promoted - c.promotion.promoted_matched for c in up]), resamples, 30)
    eliminated = _mean(_cat([c.promotion.eliminated - c.promotion.eliminated_matched for c in up]), resamples, 40)
    est = [item_estimate(KV_CRITERION.quantity, *ratio),
           item_estimate("upper- minus lower-third agreement", *rise),
           item_estimate("lower- minus upper-third shallow-share excess over random positions", *fall),
           item_estimate("upper third: promoted minus frequency-matched tokens' sub-update z", *promoted),
           item_estimate("upper third: eliminated minus frequency-matched tokens' sub-update z", *eliminated)]
    ci = lambda e: f"{e[0]:+.3g} (95% CI {e[1]:+.3g} to {e[2]:+.3g})"  # noqa: E731
    verdict, reason = decide_items(KV_CRITERION, est[0], len(hit_up), "upper-third neurons", requirements=[
        (rise[1] > 0, f"agreement rises with depth: upper minus lower third {ci(rise)}"),
        (fall[1] > 0, f"shallow patterns fall with depth: lower minus upper third shallow excess {ci(fall)}"),
        (promoted[1] > 0, f"promoted tokens beat frequency-matched ones in the upper third by {ci(promoted)} z")])
    finding = ("active suppression: eliminated tokens score below frequency-matched ones" if eliminated[2] < 0
               else "eliminated tokens score above frequency-matched ones" if eliminated[1] > 0
               else "eliminated tokens are not distinguishable from frequency-matched ones (as Geva et al. 2022's ≈0)")
    return est, verdict, f"{reason}. Finding: {finding} in the upper third, {ci(eliminated)} z"


def layer_rows(layers: list[LayerControls], resamples: int = 500) -> list[dict]:
    """Per layer: agreement, shallow shares and promotion with 95% bootstrap intervals."""
    rows = []
    for c in layers:
        a, p = c.agreement, c.promotion
        rows.append({
            "layer": c.layer, "neurons": len(a.hit), "agree": _mean(a.hit, resamples, c.layer),
            "shuffled": float(a.shuffled.mean()) if len(a.shuffled) else float("nan"),
            "unigram": float(a.unigram.mean()) if len(a.unigram) else float("nan"),
            "shallow": _mean(c.shallow, resamples, c.layer), "shallow_random": float(c.shallow_random.mean()),
            "shallow_excess": _mean(c.shallow - c.shallow_random, resamples, c.layer),
            "changes": len(p.promoted), "promoted": float(p.promoted.mean()) if len(p.promoted) else float("nan"),
            "promoted_matched": float(p.promoted_matched.mean()) if len(p.promoted) else float("nan"),
            "promoted_excess": _mean(p.promoted - p.promoted_matched, resamples, c.layer),
            "eliminated": float(p.eliminated.mean()) if len(p.eliminated) else float("nan"),
            "eliminated_matched": float(p.eliminated_matched.mean()) if len(p.eliminated) else float("nan"),
            "eliminated_excess": _mean(p.eliminated - p.eliminated_matched, resamples, c.layer)})
    return rows
