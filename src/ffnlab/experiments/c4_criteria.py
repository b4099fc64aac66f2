"""C4's criterion, shared by the own-model and the pretrained experiments, and its summaries.

Fixed before the runs of ffn-ablation v3 and pretrained-ffn-ablation v3 (the criteria before
them could not fail and their results had been seen: see the Deviations there).

Claim: "the FFN post-processes attention's output". Two measurable consequences:

1. FFN l reads what its own layer's attention wrote. Path patching (analysis.paths): swap
   attention l's output, only on its way into FFN l, for its value on another input, and
   measure the relative change of FFN l's output; control: the change of a random earlier
   component (embedding, or an attention / FFN output below l) between the same two inputs,
   rescaled to the same norm per position and sent down the same path. Selectivity
   s = (r_attn - r_control) / (r_attn + r_control) in [-1, 1]; 0 = FFN l responds to its
   attention's change no more than to any change of that size in its input.
   Quantity: mean of s over layers >= 1 (layer 0, whose only earlier component is the
   embedding, is reported apart). Supported needs its 95% interval above 0.1, i.e. the
   FFN moves about 22% more per unit of its own attention's change than per unit of the
   control's.
2. What the FFN does brings the stream closer to the output than what attention did.
   Tuned lens (analysis.tuned_lens): KL(final || lens) before attention l, before FFN l
   and after it. Gap g = (KL drop across FFN l) - (KL drop across attention l), mean over
   layers >= 1; required for "supported": its interval above 0.

    supported         s's interval > 0.1 and g's interval > 0
    partly supported  s's mean > 0.1 but not its interval; or s clears and g does not;
                      or s misses and g's interval > 0
    not supported     s misses and g's interval does not clear 0

Intervals: a t-interval over paired seeds on own models (each seed its own trained model);
on a pretrained model, a bootstrap over the evaluated sequences (one model: sequences are
the unit).
"""

from __future__ import annotations

from collections.abc import Sequence

from ffnlab.analysis.bootstrap import bootstrap_mean
from ffnlab.analysis.paths import PathResult
from ffnlab.analysis.tuned_lens import LensKL
from ffnlab.experiments.verdict import decide, estimate
from ffnlab.results import Criterion, Estimate

CRITERION = Criterion(
    "path-patching selectivity of FFN l for its own attention's output, mean over layers >= 1", ">", 0.1,
    "95% interval (t over paired seeds on own models; bootstrap over sequences on a pretrained model) above "
    "0.1; 'supported' also needs the tuned lens's KL to fall more across the FFN than across attention "
    "(mean over layers >= 1, interval above 0); either alone gives 'partly supported'")
SELECTIVITY = CRITERION.quantity
LENS_GAP = "tuned lens: KL drop across the FFN minus across attention, mean over layers >= 1"


def per_sequence_selectivity(path: PathResult, layers: Sequence[int]) -> list[float]:
    """Per sequence: the mean over `layers` of the earlier-component selectivity."""
    sel = path.selectivity("earlier")
    return [sum(sel[i][k] for i in layers) / len(layers) for k in range(len(sel[0]))]


def per_sequence_gap(lens: LensKL, layers: Sequence[int], which: str = "tuned") -> list[float]:
    """Per sequence: the mean over `layers` of (KL drop across the FFN) - (KL drop across attention)."""
    ffn, attn = lens.drop(which, "ffn"), lens.drop(which, "attn")
    at = [lens.layers.index(i) for i in layers]
    return [sum(ffn[i][k] - attn[i][k] for i in at) / len(at) for k in range(len(ffn[0]))]


def bootstrap(quantity: str, items: Sequence[float], unit: str = "", n: int = 2000, seed: int = 0,
              per_seed: Sequence[float] | None = None) -> Estimate:
    """Mean over `items` with a 95% percentile bootstrap interval over them (items: sequences)."""
    if len(items) == 0:
        raise ValueError(f"no values for {quantity}")
    mean, lo, hi = bootstrap_mean(items, n, seed)
    return Estimate(quantity, mean, lo, hi, list(per_seed if per_seed is not None else [mean]), unit)


def c4_verdict(selectivity: Estimate, gap: Estimate) -> tuple[str, str]:
    """(verdict, reason) from the two estimates, as the module docstring states."""
    lens_ok = gap.ci_low > 0
    lens_text = (f"the tuned lens's KL falls more across the FFN than across attention (gap {gap.mean:.3g}, "
                 f"95% CI {gap.ci_low:.3g} to {gap.ci_high:.3g} > 0)")
    return decide(CRITERION, selectivity, requirements=[(lens_ok, lens_text)], partial=(lens_ok, lens_text))


def seed_estimates(selectivity: Sequence[float], gap: Sequence[float]) -> tuple[Estimate, Estimate]:
    """Own models: one value per seed each, t-intervals over the paired seeds."""
    return estimate(SELECTIVITY, selectivity), estimate(LENS_GAP, gap, "nats")


# -- one pretrained model, each half of the claim on its own (the two halves come from two experiments) -------
PATH_CRITERION = Criterion(
    SELECTIVITY, ">", 0.1, "95% bootstrap interval over the evaluated sequences (pooled over seeds) above 0.1; "
    "partly if only the mean clears it")
LENS_CRITERION = Criterion(
    LENS_GAP, ">", 0.0, "95% bootstrap interval over the evaluated sequences above 0 (the FFN moves the stream "
    "towards the output more than attention does); partly if only the mean is above 0")


def single_verdict(c: Criterion, e: Estimate, sequences: int) -> tuple[str, str]:
    """(verdict, reason) of one half of the claim on one model; the interval is a bootstrap over `sequences`."""
    return decide(c, e, over="sequences, bootstrap", n=sequences)
