"""Knowledge neurons (Dai et al. 2022) refined over paraphrases, with a matched baseline and specificity.

    layer_attributions   integrated gradients of p(answer) for every layer's neurons at the last position;
                         each row of a batched pass scales one layer's activations (others at their values)
    refine               neurons above 0.2 x a prompt's best attribution in more than half of a fact's
                         prompts (Dai et al. §3.2's paraphrase refinement), at most `max_neurons`
    mean_abs_activation  (L, F) mean |activation| over every position of a set of prompts
    matched_random       per neuron, a random neuron of the same layer among the `pool` whose mean
                         |activation| is closest (so a random set is as loud as the attributed one)
    suppression          mean relative change of p(answer) over prompts with neurons zeroed at every position
    overlap              how often the same neurons recur across facts' sets

Localising a fact's neurons is not editing it: suppression here is measured, not claimed to
remove the fact (Hase et al. 2023; Niu et al. 2024).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.analysis.attribution import answer_prob
from ffnlab.device import module_device
from ffnlab.model.hooks import Hooked, capture, hooks
from ffnlab.model.names import block_hook

Neuron = tuple[int, int]  # (layer, index)


def _post(layer: int) -> str:
    return block_hook(layer, "ffn.hook_post")


def layer_attributions(model: Hooked, tokens: Tensor, answer: int, steps: int = 20,
                       layers: Sequence[int] | None = None, max_rows: int = 64) -> Tensor:
    """Attributions (L, F) to p(answer) of each layer's neurons at the last position of `tokens` (1, T).

    Dai et al.'s integrated gradients (right Riemann sum, `steps` points from 0 to the actual
    activation), one layer at a time; up to `max_rows` path points of several layers share one pass.
    """
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    tokens = tokens.to(module_device(model))
    t = tokens.shape[1]
    names = [_post(layer) for layer in layers]
    with torch.no_grad(), capture(model, names) as cache:
        model(tokens)
    acts = {layer: cache[n][0, -1].float() for layer, n in zip(layers, names)}  # (F,) each
    width = max(a.shape[0] for a in acts.values())
    out = torch.zeros(model.n_layers, width)
    alphas = (torch.arange(steps, dtype=torch.float32) + 1) / steps
    per = max(1, max_rows // steps)
    for g in range(0, len(layers), per):
        group = layers[g:g + per]
        scaled = {layer: (alphas.to(acts[layer].device)[:, None] * acts[layer]).requires_grad_() for layer in group}

        def editor(j: int, layer: int):
            def edit(a: Tensor) -> Tensor:
                a = a.clone()
                a[j * steps:(j + 1) * steps, -1] = scaled[layer].to(a.dtype)  # rows of this layer's path
                return a
            return edit

        n = len(group) * steps
        with torch.enable_grad(), hooks(model, {_post(layer): editor(j, layer) for j, layer in enumerate(group)}):
            probs = model(tokens.expand(n, t))[:, -1].float().softmax(-1)[:, answer]
            grads = torch.autograd.grad(probs.sum(), [scaled[layer] for layer in group])
        for layer, grad in zip(group, grads):
            out[layer, : acts[layer].shape[0]] = (acts[layer] * grad.mean(0)).detach().cpu()
    return out


def refine(scores: Sequence[Tensor], threshold: float = 0.2, majority: float = 0.5,
           max_neurons: int = 5) -> list[Neuron]:
    """Neurons whose attribution exceeds `threshold` x the prompt's best in more than `majority` of the
    prompts, strongest mean attribution first, at most `max_neurons` (empty when none is shared)."""
    n = len(scores)
    above = torch.stack([(s > 0) & (s > threshold * s.max()) for s in scores]).sum(0)  # (L, F) prompts
    keep = (above > majority * n).flatten().nonzero().squeeze(1)
    mean = torch.stack(list(scores)).mean(0).flatten()
    order = keep[mean[keep].argsort(descending=True)][:max_neurons]
    width = scores[0].shape[1]
    return [(int(i) // width, int(i) % width) for i in order]


@torch.no_grad()
def mean_abs_activation(model: Hooked, prompts: Sequence[Tensor]) -> Tensor:
    """(L, F) mean |activation| of every neuron over every position of `prompts` (each (1, T))."""
    names = [_post(layer) for layer in range(model.n_layers)]
    total, count = None, 0
    for p in prompts:
        with capture(model, names) as cache:
            model(p.to(module_device(model)))
        sums = torch.stack([cache[n][0].float().abs().sum(0).cpu() for n in names])  # (L, F)
        total = sums if total is None else total + sums
        count += p.shape[1]
    return total / count


def matched_random(neurons: Sequence[Neuron], mean_abs: Tensor, generator: torch.Generator,
                   avoid: Sequence[Neuron] = (), pool: int = 16) -> list[Neuron]:
    """Per neuron, a random other neuron of its layer, drawn from the `pool` closest to it in
    log mean |activation|; none in `avoid` or picked twice."""
    taken, out = set(avoid) | set(neurons), []
    for layer, i in neurons:
        dist = (mean_abs[layer].clamp_min(1e-12).log() - math.log(max(float(mean_abs[layer, i]), 1e-12))).abs()
        free = torch.tensor([(layer, j) not in taken for j in range(len(dist))])
        candidates = free.nonzero().squeeze(1)
        nearest = candidates[dist[candidates].argsort()[:pool]]
        pick = (layer, int(nearest[torch.randint(len(nearest), (1,), generator=generator)]))
        taken.add(pick)
        out.append(pick)
    return out


def suppression(model: Hooked, prompts: Sequence[Tensor], answer: int, neurons: Sequence[Neuron],
                clean: Sequence[float] | None = None) -> float:
    """Mean over `prompts` of (p' - p) / p, p(answer) with `neurons` zeroed at every position (p') and
    without (p, or `clean`)."""
    if not neurons:
        return 0.0
    base = clean if clean is not None else [answer_prob(model, p, answer) for p in prompts]
    rel = [(answer_prob(model, p, answer, neurons, 0.0) - b) / b for p, b in zip(prompts, base)]
    return sum(rel) / len(rel)


@dataclass
class Overlap:
    """How often facts' neuron sets share neurons."""

    facts: int
    neurons: int  # distinct neurons over all sets
    recurring: dict[int, int]  # k -> neurons found in at least k facts' sets (k >= 2)
    mean_jaccard: float  # over pairs of non-empty sets
    by_layer: list[int]  # distinct neurons per layer


def overlap(sets: Sequence[Sequence[Neuron]], n_layers: int) -> Overlap:
    counts = Counter(n for s in sets for n in set(s))
    recurring = {k: sum(c >= k for c in counts.values()) for k in range(2, max([2, *counts.values()]) + 1)}
    full = [set(s) for s in sets if s]
    pairs = [(a, b) for i, a in enumerate(full) for b in full[i + 1:]]
    jac = sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs) if pairs else float("nan")
    by_layer = [sum(layer == li for li, _ in counts) for layer in range(n_layers)]
    return Overlap(len(sets), len(counts), recurring, jac, by_layer)


