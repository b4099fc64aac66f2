"""Controls for reading FFN neurons as key-value memories (Geva et al. 2021; 2022), per item so that
intervals can be bootstrapped over neurons or positions.

    neuron_agreement   per neuron with a target: value top-1 == the top trigger's target (0/1), the
                       same against shuffled neurons' targets (hit rate), and the unigram probability
                       of the value's top-1 (the chance a corpus token is it)
    shallow_shares     per neuron, the share of its top-k triggers that share their last token, or the
                       two tokens before it, with another of its triggers (a surface pattern: Geva et
                       al.'s "shallow"; the rest are left to "semantic"); the same for k random positions
    frequency_matched  per token, a random other token of about the same corpus frequency
    promotion_scores   Geva et al. 2022 §4 per changed position: the z-score, in the layer's largest
                       sub-updates, of the promoted and eliminated tokens and of frequency-matched ones
    bootstrap          means of resampled items, and their 95% percentile interval
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.analysis.memories import ValueTokens, trigger_targets
from ffnlab.analysis.neurons import NeuronStats
from ffnlab.device import module_device
from ffnlab.model.hooks import Hooked, capture
from ffnlab.model.names import block_hook


def token_counts(stats: NeuronStats, vocab_size: int) -> Tensor:
    """(V,) how often each token occurs in the windows the statistics were taken over."""
    stream = stats.tokens[: (len(stats.tokens) // stats.seq_len) * stats.seq_len]
    return torch.bincount(stream, minlength=vocab_size)[:vocab_size]


@dataclass
class NeuronAgreement:
    """Per neuron whose top trigger has a target (N,)."""

    hit: Tensor  # 1.0 where the value's top-1 is the target
    shuffled: Tensor  # hit rate against other neurons' targets
    unigram: Tensor  # corpus frequency of the value's top-1


def neuron_agreement(stats: NeuronStats, layer: int, values: ValueTokens, causal: bool, counts: Tensor,
                     shuffles: int = 20, seed: int = 0) -> NeuronAgreement:
    g = torch.Generator().manual_seed(seed)
    targets = trigger_targets(stats, layer, causal)
    top1 = values.promoted(torch.sign(stats.layers[layer].top_values[:, 0]))[:, 0]
    ok = targets >= 0
    hits, valid = torch.zeros(len(targets)), torch.zeros(len(targets))
    for _ in range(shuffles):
        other = targets[torch.randperm(len(targets), generator=g)]
        hits += ((top1 == other) & (other >= 0)).float()
        valid += (other >= 0).float()
    freq = counts.double() / counts.sum()
    return NeuronAgreement((top1 == targets)[ok].double(), (hits / valid.clamp_min(1))[ok].double(),
                           freq[top1][ok])


def _contexts(stats: NeuronStats, index: Tensor) -> tuple[Tensor, Tensor]:
    """(F, k) positions -> their last tokens (F, k) and the two bigrams ending there and one before (F, k, 2),
    -1 where a bigram would cross the window's start."""
    t, start = stats.tokens, (index // stats.seq_len) * stats.seq_len
    tok = [torch.where(index - off >= start, t[(index - off).clamp_min(0)], -1) for off in range(3)]
    v = int(t.max()) + 1
    code = lambda a, b: torch.where((a >= 0) & (b >= 0), a * v + b, -1)  # noqa: E731
    return tok[0], torch.stack([code(tok[1], tok[0]), code(tok[2], tok[1])], -1)


def shallow_share(last: Tensor, bigrams: Tensor) -> Tensor:
    """(F,) share of each row's k contexts that share the last token, or a bigram, with another of the row."""
    k = last.shape[1]
    same = last[:, :, None] == last[:, None, :]  # (F, k, k)
    b = bigrams
    shared = ((b[:, :, None, :, None] == b[:, None, :, None, :]) & (b[:, :, None, :, None] >= 0)).flatten(3).any(-1)
    pair = (same | shared) & ~torch.eye(k, dtype=torch.bool)
    return pair.any(-1).double().mean(1)


def shallow_shares(stats: NeuronStats, layer: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Per neuron (F,): the shallow share of its top-k triggers, and of k random positions of the stream."""
    index = stats.layers[layer].top_index
    n = (len(stats.tokens) // stats.seq_len) * stats.seq_len
    rand = torch.randint(n, index.shape, generator=torch.Generator().manual_seed(seed + layer))
    return shallow_share(*_contexts(stats, index)), shallow_share(*_contexts(stats, rand))


def frequency_matched(tokens: Tensor, counts: Tensor, generator: torch.Generator, pool: int = 50) -> Tensor:
    """Per token, a random token among the `pool` nearest to it in the vocabulary sorted by corpus count
    (never itself)."""
    order = counts.argsort(stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    r = rank[tokens]
    lo = (r - pool // 2).clamp(0, len(order) - pool - 1)
    pick = lo + torch.randint(pool, r.shape, generator=generator)
    pick = torch.where(pick >= r, pick + 1, pick)  # skip the token itself
    return order[pick]


@dataclass
class PromotionScores:
    """Per position whose top-1 token the FFN changed (C,): mean z-score over the top sub-updates."""

    layer: int
    promoted: Tensor
    promoted_matched: Tensor
    eliminated: Tensor
    eliminated_matched: Tensor


@torch.no_grad()
def promotion_scores(model: Hooked, tokens: Tensor, layer: int, logits: Tensor, counts: Tensor,
                     generator: torch.Generator, top: int = 10, pool: int = 50) -> PromotionScores:
    """Geva et al. 2022 §4 for one layer over `tokens` (B, T), with frequency-matched tokens beside the
    promoted (top-1 after the FFN) and eliminated (top-1 before it) ones."""
    names = [block_hook(layer, n) for n in ("hook_resid_mid", "ffn.hook_post", "hook_resid_post")]
    with capture(model, names) as cache:
        model(tokens.to(module_device(model)))
    mid, post, res = (cache[n].reshape(-1, cache[n].shape[-1]) for n in names)
    before = model.unembed(mid[None]).float()[0].argmax(-1).cpu()
    after = model.unembed(res[None]).float()[0].argmax(-1).cpu()
    changed = (before != after).nonzero().squeeze(1)
    z = (logits - logits.mean(1, keepdim=True)) / logits.std(1, keepdim=True)  # (F, V)
    m = post.float().cpu()[changed]  # (C, F)
    order = (m.abs() * model.ffn_values(layer).float().norm(dim=1).cpu()).topk(min(top, m.shape[1]), dim=1).indices
    sign = torch.sign(m.gather(1, order))  # (C, top)
    score = lambda tok: (sign * z[order, tok[:, None]]).mean(1).double()  # noqa: E731
    up, down = after[changed], before[changed]
    return PromotionScores(layer, score(up), score(frequency_matched(up, counts, generator, pool)),
                           score(down), score(frequency_matched(down, counts, generator, pool)))




