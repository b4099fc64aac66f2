"""Logit lens around each FFN, and how ablating an FFN changes later attention.

Logit lens (nostalgebraist 2020): read an intermediate residual stream through the
model's own final norm and head (`model.unembed`). Read just before each FFN
(`hook_resid_mid`) and just after it (`hook_resid_post`), it shows how far that FFN
moves the prediction towards the final one: KL(final || lens) falls and top-1
agreement with the final prediction rises when the FFN does useful post-processing.

`attention_shift` asks whether an FFN prepares what *later* layers attend to: ablate
the FFN of layer l and measure, for every later layer j and head h, the mean total
variation distance between the clean and the ablated attention rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.device import module_device
from ffnlab.model.hooks import ablate, capture
from ffnlab.model.names import block_hook


@dataclass
class LensResult:
    """Per layer: KL to the final distribution and top-1 agreement, before and after the FFN."""

    kl_before: list[float]
    kl_after: list[float]
    top1_before: list[float]
    top1_after: list[float]

    @property
    def kl_drop(self) -> list[float]:
        """How much each FFN lowers KL(final || lens) (positive = towards the final prediction)."""
        return [b - a for b, a in zip(self.kl_before, self.kl_after)]

    @property
    def top1_gain(self) -> list[float]:
        return [a - b for b, a in zip(self.top1_before, self.top1_after)]


def _kl_and_agreement(final_logp: Tensor, lens_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Summed KL(final || lens) and count of equal argmax, over all tokens."""
    lens_logp = lens_logits.float().log_softmax(-1)
    kl = (final_logp.exp() * (final_logp - lens_logp)).sum(-1)
    agree = (final_logp.argmax(-1) == lens_logp.argmax(-1)).float()
    return kl.sum(), agree.sum()


@torch.no_grad()
def logit_lens(model, tokens: Tensor, batch_size: int = 8) -> LensResult:
    """Logit lens before and after every FFN on `tokens` (B, T)."""
    n_layers = model.n_layers
    names = [block_hook(i, site) for i in range(n_layers) for site in ("hook_resid_mid", "hook_resid_post")]
    sums = torch.zeros(n_layers, 4, dtype=torch.float64)  # kl before, kl after, top1 before, top1 after
    count, device = 0, module_device(model)
    for start in range(0, tokens.shape[0], batch_size):
        part = tokens[start:start + batch_size].to(device)
        with capture(model, names, device=None) as cache:
            final_logp = model(part).float().log_softmax(-1)
        for i in range(n_layers):
            kl_b, top_b = _kl_and_agreement(final_logp, model.unembed(cache[block_hook(i, "hook_resid_mid")]))
            kl_a, top_a = _kl_and_agreement(final_logp, model.unembed(cache[block_hook(i, "hook_resid_post")]))
            sums[i] += torch.stack([kl_b, kl_a, top_b, top_a]).double().cpu()
        count += part.shape[0] * part.shape[1]
    mean = (sums / count).T.tolist()
    return LensResult(*mean)


@dataclass
class AttentionShift:
    """`tv[l][k][h]`: mean total-variation distance of head h's attention rows in layer
    l + 1 + k when the FFN of layer l is ablated (later layers only)."""

    how: str
    tv: list[list[list[float]]]

    @property
    def next_layer(self) -> list[float]:
        """Per ablated layer: mean TV over the heads of the very next layer (empty for the last)."""
        return [sum(rows[0]) / len(rows[0]) for rows in self.tv if rows]

    @property
    def later_layers(self) -> list[float]:
        """Per ablated layer: mean TV over all heads of all later layers."""
        out = []
        for rows in self.tv:
            if rows:
                flat = [x for heads in rows for x in heads]
                out.append(sum(flat) / len(flat))
        return out


@torch.no_grad()
def attention_shift(model, tokens: Tensor, how: str = "zero", reference: dict[str, Tensor] | None = None,
                    batch_size: int = 8, seed: int = 0) -> AttentionShift:
    """How much each FFN's ablation changes the attention patterns of the layers after it.

    `reference` holds reference FFN outputs for mean/resample ablation
    (see `ffnlab.analysis.ablation.reference_activations`).
    """
    n_layers = model.n_layers
    patterns = [block_hook(j, "attn.hook_pattern") for j in range(n_layers)]
    tv_sum = [[None] * n_layers for _ in range(n_layers)]  # [l][j] -> (H,) summed over rows
    rows, device = 0, module_device(model)
    for start in range(0, tokens.shape[0], batch_size):
        part = tokens[start:start + batch_size].to(device)
        with capture(model, patterns, device=None) as clean:
            model(part)
        for layer in range(n_layers - 1):
            later = patterns[layer + 1:]
            gen = torch.Generator().manual_seed(seed * 1000 + layer)
            # hook every layer's pattern as in the clean run: the explicit softmax path and the
            # fused kernel differ in the last bits, which would show up as a spurious shift
            with ablate(model, [block_hook(layer, "ffn.hook_out")], how, reference=reference, generator=gen), \
                    capture(model, patterns, device=None) as ablated:
                model(part)
            for name in later:
                j = int(name.split(".")[1])
                tv = 0.5 * (clean[name] - ablated[name]).abs().sum(-1)  # (B, H, T)
                total = tv.double().sum((0, 2))
                tv_sum[layer][j] = total if tv_sum[layer][j] is None else tv_sum[layer][j] + total
        rows += part.shape[0] * part.shape[1]
    tv = [[(tv_sum[layer][j].cpu() / rows).tolist() for j in range(layer + 1, n_layers)] for layer in range(n_layers)]
    return AttentionShift(how, tv)
