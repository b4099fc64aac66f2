"""FFN neurons as key-value memories, read in the vocabulary (Geva et al. 2021; 2022).

    value_logits        every value vector of a layer projected to the vocabulary (F, V)
    layer_value_tokens  each neuron's top promoted and suppressed tokens, without holding (F, V)
    value_tokens        each neuron's top promoted and suppressed tokens
    agreement           Geva et al. 2021 §4: does the value's top token equal the next token
                        of the key's top trigger? vs 1/V, a unigram baseline and shuffled pairs;
                        plus the share of triggers that end in the same token (shallow patterns)
    sub_updates         Geva et al. 2022: one FFN output as a sum of coefficient x value terms,
                        ranked by |m| ||v||, with the tokens each term promotes
    promotion           Geva et al. 2022 §4: over a corpus, are the tokens that win after an FFN
                        pushed up by its top sub-updates, and those that drop out pushed down?

A value is projected with the model's own `unembed` (final norm and head); a neuron with a
negative coefficient (gated FFNs) adds -|m| v, so its projection is read with the sign flipped.
The model may sit on any device; what these functions return is on the CPU, beside the statistics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.analysis.neurons import NeuronStats
from ffnlab.device import module_device
from ffnlab.model.hooks import Hooked, capture
from ffnlab.model.names import block_hook


@torch.no_grad()
def value_logits(model: Hooked, layer: int, neurons: Sequence[int] | Tensor | None = None, chunk: int = 512) -> Tensor:
    """The vocabulary projection of layer `layer`'s value vectors (all, or `neurons`): (F, V) float32, on the CPU."""
    return torch.cat([part.cpu() for part in _value_logit_chunks(model, layer, neurons, chunk)])


def _value_logit_chunks(model: Hooked, layer: int, neurons: Sequence[int] | Tensor | None,
                        chunk: int) -> Iterator[Tensor]:
    """The vocabulary projection of the layer's value vectors, `chunk` neurons at a time: (<=chunk, V)."""
    values = model.ffn_values(layer)  # (F, D)
    if neurons is not None:
        values = values[torch.as_tensor(neurons, dtype=torch.long)]
    for i in range(0, values.shape[0], chunk):
        yield model.unembed(values[i:i + chunk][None]).float()[0]


@dataclass
class ValueTokens:
    """Per neuron (F, k): tokens a positive coefficient promotes (`top`) and suppresses (`bottom`)."""

    top: Tensor
    top_scores: Tensor
    bottom: Tensor
    bottom_scores: Tensor

    def promoted(self, sign: Tensor) -> Tensor:
        """(F, k) tokens the neuron promotes when its coefficient has sign `sign` (F,)."""
        return torch.where(sign[:, None] >= 0, self.top, self.bottom)


def value_tokens(logits: Tensor, k: int = 10) -> ValueTokens:
    top = logits.topk(k, dim=1)
    bottom = logits.topk(k, dim=1, largest=False)
    return ValueTokens(top.indices, top.values, bottom.indices, bottom.values)


@torch.no_grad()
def layer_value_tokens(model: Hooked, layer: int, k: int = 10, chunk: int = 512) -> ValueTokens:
    """`value_tokens` of every neuron of a layer, a chunk at a time: the (F, V) logits are never
    held whole (SmolLM2: 300 MB a layer, and concatenating them cost more than projecting)."""
    parts = []
    for logits in _value_logit_chunks(model, layer, None, chunk):
        vt = value_tokens(logits, k)
        parts.append(tuple(t.cpu() for t in (vt.top, vt.top_scores, vt.bottom, vt.bottom_scores)))
    return ValueTokens(*(torch.cat(p) for p in zip(*parts)))


@dataclass
class Agreement:
    """Key-value agreement of one layer (shares over neurons whose top trigger has a target)."""

    layer: int
    neurons: int
    agree: float  # value's top-1 == target of the top trigger
    agree_top10: float  # target among the value's top-10
    shuffled: float  # same, with values paired to other neurons' triggers
    unigram: float  # expected agreement if the targets were drawn from the corpus
    uniform: float  # 1 / V
    same_last: float  # mean share of the top-k triggers ending in the neuron's most common token
    same_last_random: float  # the same share for k random corpus positions


def trigger_targets(stats: NeuronStats, layer: int, causal: bool) -> Tensor:
    """Per neuron, the token its top trigger predicts: the next token (causal), else itself. -1: none."""
    out = []
    for idx in stats.layers[layer].top_index[:, 0].tolist():
        t = stats.next_token(idx) if causal else int(stats.tokens[idx])
        out.append(-1 if t is None else t)
    return torch.tensor(out)


def _same_last_share(tokens: Tensor) -> Tensor:
    """(F, k) trigger tokens -> share of each row taken by its most common token."""
    sorted_, _ = tokens.sort(dim=1)
    runs = torch.ones_like(sorted_)
    for j in range(1, sorted_.shape[1]):  # length of the run of equal tokens ending at j
        runs[:, j] = torch.where(sorted_[:, j] == sorted_[:, j - 1], runs[:, j - 1] + 1, 1)
    return runs.max(1).values.double() / tokens.shape[1]


def agreement(stats: NeuronStats, layer: int, values: ValueTokens, causal: bool, vocab_size: int,
              shuffles: int = 20, seed: int = 0) -> Agreement:
    """Geva et al. 2021's agreement rate for one layer, with three baselines."""
    g = torch.Generator().manual_seed(seed)
    s = stats.layers[layer]
    targets = trigger_targets(stats, layer, causal)
    promoted = values.promoted(torch.sign(s.top_values[:, 0]))  # (F, k)
    ok = targets >= 0
    agree = (promoted[:, 0] == targets)[ok].double().mean().item()
    agree10 = (promoted[:, :10] == targets[:, None]).any(1)[ok].double().mean().item()
    shuffled = []
    for _ in range(shuffles):
        perm = torch.randperm(len(targets), generator=g)
        hit = (promoted[:, 0] == targets[perm])[ok & (targets[perm] >= 0)]
        shuffled.append(hit.double().mean().item())
    stream = stats.tokens[: (len(stats.tokens) // stats.seq_len) * stats.seq_len]
    freq = torch.bincount(stream, minlength=vocab_size).double() / len(stream)
    unigram = freq[promoted[:, 0][ok]].mean().item()
    k = s.top_index.shape[1]
    last = stats.tokens[s.top_index]  # (F, k) the token each trigger ends in
    rand = stream[torch.randint(len(stream), (len(targets), k), generator=g)]
    return Agreement(layer, int(ok.sum()), agree, agree10, sum(shuffled) / len(shuffled), unigram, 1 / vocab_size,
                     _same_last_share(last).mean().item(), _same_last_share(rand).mean().item())


# -- sub-updates (Geva et al. 2022) --------------------------------------------------------------
@dataclass
class SubUpdate:
    neuron: int
    coefficient: float  # m_i
    weight: float  # |m_i| * ||v_i||
    tokens: list[int]  # what sign(m_i) * v_i promotes most


@torch.no_grad()
def sub_updates(model: Hooked, tokens: Tensor, layer: int, position: int = -1, top: int = 10,
                k: int = 8, logits: Tensor | None = None) -> list[SubUpdate]:
    """Layer `layer`'s FFN output at `position` of `tokens` (1, T) as its `top` largest terms m_i v_i."""
    name = block_hook(layer, "ffn.hook_post")
    with capture(model, [name]) as cache:
        model(tokens.to(module_device(model)))
    m = cache[name][0, position].float()  # (F,)
    values = model.ffn_values(layer).float()
    weight = m.abs() * values.norm(dim=1)
    order = weight.topk(min(top, len(weight))).indices
    proj = logits.to(m.device)[order] if logits is not None else model.unembed(values[order][None].to(
        model.ffn_values(layer).dtype)).float()[0]
    proj = proj * torch.sign(m[order])[:, None]
    return [SubUpdate(int(i), float(m[i]), float(weight[i]), proj[j].topk(k).indices.tolist())
            for j, i in enumerate(order.tolist())]


@dataclass
class Promotion:
    """Mean z-scored projection score, over a layer's top sub-updates, of the tokens that changed.

    `promoted`: the top-1 token after the FFN (when it changed); `eliminated`: the top-1 before
    it. Scores are standardised over the vocabulary, so a random token scores 0 on average.
    """

    layer: int
    changes: int  # positions whose top-1 token the FFN changed
    promoted: float
    eliminated: float


@torch.no_grad()
def promotion(model: Hooked, tokens: Tensor, layer: int, logits: Tensor, top: int = 10) -> Promotion:
    """Geva et al. 2022 §4 for one layer, over every position of `tokens` (B, T)."""
    names = [block_hook(layer, "hook_resid_mid"), block_hook(layer, "ffn.hook_post"), block_hook(layer, "hook_resid_post")]
    with capture(model, names) as cache:
        model(tokens.to(module_device(model)))
    mid, post, res = (cache[n].reshape(-1, cache[n].shape[-1]) for n in names)
    logits = logits.to(post.device)
    before = model.unembed(mid[None]).float()[0].argmax(-1)
    after = model.unembed(res[None]).float()[0].argmax(-1)
    changed = (before != after).nonzero().squeeze(1)
    if changed.numel() == 0:
        return Promotion(layer, 0, float("nan"), float("nan"))
    z = (logits - logits.mean(1, keepdim=True)) / logits.std(1, keepdim=True)  # (F, V)
    norms = model.ffn_values(layer).float().norm(dim=1)
    m = post[changed].float()  # (C, F)
    order = (m.abs() * norms).topk(min(top, m.shape[1]), dim=1).indices  # (C, top)
    sign = torch.sign(m.gather(1, order))
    score = lambda tok: (sign * z[order, tok[changed][:, None]]).mean().item()  # noqa: E731
    return Promotion(layer, int(changed.numel()), score(after), score(before))
