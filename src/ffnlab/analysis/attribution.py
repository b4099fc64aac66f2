"""Knowledge neurons (Dai et al. 2022): integrated gradients over FFN neurons, then intervene.

For a fact prompt, each neuron's activation at the answer position (`ffn.hook_post`) is
scaled from 0 to its actual value in `steps` steps; its attribution is the activation times
the mean gradient of p(answer) along that path (a Riemann sum of integrated gradients).
The top neurons are then suppressed (x0) or amplified (x2) with `ffnlab.model.hooks.scale`,
against as many random neurons of the same layers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import Tensor

from ffnlab.device import module_device
from ffnlab.model.hooks import Hooked, capture, hooks, scale
from ffnlab.model.names import block_hook


def _post(layer: int) -> str:
    return block_hook(layer, "ffn.hook_post")


def integrated_gradients(model: Hooked, tokens: Tensor, answer: int, layer: int, steps: int = 20,
                         position: int = -1) -> Tensor:
    """Attribution (F,) of layer `layer`'s neurons at `position` of `tokens` (1, T) to p(answer)."""
    name = _post(layer)
    tokens = tokens.to(module_device(model))
    with torch.no_grad(), capture(model, [name]) as cache:
        model(tokens)
    act = cache[name][0, position].float()  # (F,)
    # right Riemann sum, ends at alpha = 1
    alphas = (torch.arange(steps, dtype=torch.float32, device=act.device) + 1) / steps
    scaled = (alphas[:, None] * act).requires_grad_()  # (steps, F): one path point per row
    t = tokens.shape[1]
    pos = position % t

    def edit(a: Tensor) -> Tensor:
        keep = torch.arange(t, device=a.device) != pos
        return torch.where(keep[None, :, None], a, scaled[:, None, :].to(a.dtype))

    with torch.enable_grad(), hooks(model, {name: edit}):
        probs = model(tokens.expand(steps, t))[:, -1].float().softmax(-1)[:, answer]
        (grad,) = torch.autograd.grad(probs.sum(), scaled)
    return (act * grad.mean(0)).cpu()


def attribute(model: Hooked, tokens: Tensor, answer: int, layers: Sequence[int] | None = None,
              steps: int = 20) -> Tensor:
    """Attributions (L, F) of every layer's neurons (layers not in `layers` are zero)."""
    layers = range(model.n_layers) if layers is None else layers
    rows = {layer: integrated_gradients(model, tokens, answer, layer, steps) for layer in layers}
    width = max(r.shape[0] for r in rows.values())
    out = torch.zeros(model.n_layers, width)
    for layer, r in rows.items():
        out[layer, : r.shape[0]] = r
    return out


def top_neurons(scores: Tensor, threshold: float = 0.2, max_neurons: int = 5) -> list[tuple[int, int]]:
    """Neurons scoring above `threshold` x the best score (Dai et al.), at most `max_neurons`."""
    flat = scores.flatten()
    order = flat.topk(min(max_neurons, flat.numel())).indices
    keep = [int(i) for i in order if flat[i] > threshold * flat[order[0]]] or [int(order[0])]
    return [(i // scores.shape[1], i % scores.shape[1]) for i in keep]


def random_like(neurons: Sequence[tuple[int, int]], width: int, generator: torch.Generator,
                avoid: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """As many random neurons, in the same layers, none of them in `avoid`."""
    taken, out = set(avoid) | set(neurons), []
    for layer, _ in neurons:
        while (pick := (layer, int(torch.randint(width, (1,), generator=generator)))) in taken:
            pass
        taken.add(pick)
        out.append(pick)
    return out


@torch.no_grad()
def answer_prob(model: Hooked, tokens: Tensor, answer: int, neurons: Sequence[tuple[int, int]] = (),
                factor: float = 1.0) -> float:
    """p(answer) at the last position with `neurons` (layer, index) multiplied by `factor`."""
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, i in neurons:
        by_layer[layer].append(i)
    with ExitStack() as stack:
        for layer, idx in by_layer.items():
            stack.enter_context(scale(model, _post(layer), idx, factor))
        return float(model(tokens.to(module_device(model)))[0, -1].float().softmax(-1)[answer])


def neuron_effects(model: Hooked, tokens: Tensor, answer: int, neurons: Sequence[tuple[int, int]], width: int,
                   seed: int = 0) -> dict[str, float]:
    """Relative change of p(answer) when `neurons` are suppressed / amplified, and random ones."""
    g = torch.Generator().manual_seed(seed)
    rand = random_like(neurons, width, g)
    p = answer_prob(model, tokens, answer)
    rel = lambda q: (q - p) / p  # noqa: E731
    return {"p": p,
            "suppress": rel(answer_prob(model, tokens, answer, neurons, 0.0)),
            "amplify": rel(answer_prob(model, tokens, answer, neurons, 2.0)),
            "random_suppress": rel(answer_prob(model, tokens, answer, rand, 0.0)),
            "random_amplify": rel(answer_prob(model, tokens, answer, rand, 2.0))}
