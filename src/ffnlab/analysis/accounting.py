"""Exact parameter and FLOP accounting per component (claim C5).

Works on ffnlab's own models and on pretrained adapters: parameters are grouped by the
model's `param_component(name)`; tied weights are counted once. FLOPs are forward
multiply-adds x 2 per token, averaged over the positions of a sequence of length T:

    attention projections  2 * (Q, K, V, O weights)                  per layer
    attention scores       2 * 2 * d_attn * T_eff    (q.k and p.v)   per layer
    ffn                    2 * (active FFN weights: top-k experts for MoE)
    head                   2 * V * D

with T_eff = (T + 1) / 2 keys on average under a causal mask and T without one, capped by a layer's
sliding window where a pretrained model has one (`keys_per_query`); d_attn is heads x head_dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ffnlab.model.config import ModelConfig

COMPONENTS = ("embeddings", "attention", "ffn", "norms", "pooler", "head")


@dataclass
class Accounting:
    """Parameter counts per component, with shares of the total and of the non-embedding part."""

    components: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @property
    def non_embedding(self) -> int:
        return self.total - self.components.get("embeddings", 0)

    def share(self, component: str) -> float:
        return self.components.get(component, 0) / self.total if self.total else 0.0

    def share_non_embedding(self, component: str) -> float | None:
        if component == "embeddings" or not self.non_embedding:
            return None
        return self.components.get(component, 0) / self.non_embedding

    def rows(self) -> list[list[object]]:
        """Table rows: component, parameters, % of all, % of non-embedding."""
        rows = []
        for c in [*COMPONENTS, *sorted(set(self.components) - set(COMPONENTS))]:
            if c not in self.components:
                continue
            ne = self.share_non_embedding(c)
            rows.append([c, self.components[c], 100 * self.share(c), None if ne is None else 100 * ne])
        rows.append(["total", self.total, 100.0, None])
        return rows


def account(model: nn.Module) -> Accounting:
    """Parameters of `model` per component (`model.param_component(name)`)."""
    out: dict[str, int] = {}
    for name, p in model.named_parameters():  # tied weights are listed once
        c = model.param_component(name)
        out[c] = out.get(c, 0) + p.numel()
    return Accounting(out)


def build_meta(cfg: ModelConfig) -> nn.Module:
    """The model of `cfg` on the meta device: exact shapes, no memory."""
    from ffnlab.model.transformer import Transformer

    with torch.device("meta"):
        return Transformer(cfg)


def account_config(cfg: ModelConfig) -> Accounting:
    return account(build_meta(cfg))


def _ffn_active_weights(ffn: nn.Module) -> int:
    """Matmul weights one token passes through in this FFN (top-k experts and router for MoE)."""
    from ffnlab.model.ffn import SharedFFN
    from ffnlab.model.moe import MoE

    if isinstance(ffn, SharedFFN):
        ffn = ffn.core
    if isinstance(ffn, MoE):
        per_expert = sum(p.numel() for p in ffn.experts[0].parameters() if p.dim() == 2)
        return ffn.router.proj.weight.numel() + ffn.top_k * per_expert
    return sum(p.numel() for p in ffn.parameters() if p.dim() == 2)


def _matmul_weights(model: nn.Module, component: str) -> int:
    return sum(p.numel() for name, p in model.named_parameters()
               if p.dim() == 2 and model.param_component(name) == component)


def flops_per_token(model: nn.Module | ModelConfig, seq_len: int) -> dict[str, float]:
    """Forward FLOPs per token by component, for sequences of length `seq_len`."""
    if isinstance(model, ModelConfig):
        model = build_meta(model)
    n_layers = model.n_layers
    d_attn = getattr(model, "d_attn", model.d_model)  # pretrained: heads x head_dim, which need not be d_model
    windows = model.attention_windows() if hasattr(model, "attention_windows") else [None] * n_layers
    if hasattr(model, "ffns"):
        ffn = sum(_ffn_active_weights(f) for f in model.ffns())
    else:
        ffn = _matmul_weights(model, "ffn")
    head = _matmul_weights(model, "head")
    tied = model.head_weight
    if tied is not None and not any(p is tied for n, p in model.named_parameters()
                                    if model.param_component(n) == "head"):
        head += tied.numel()  # a head tied to the embedding is listed (once) under embeddings
    return {
        "attention_proj": 2.0 * _matmul_weights(model, "attention"),
        "attention_scores": sum(4.0 * d_attn * keys_per_query(seq_len, w, model.causal) for w in windows),
        "ffn": 2.0 * ffn,
        "head": 2.0 * head,
    }


def keys_per_query(seq_len: int, window: int | None = None, causal: bool = True) -> float:
    """Keys a query attends to, averaged over the T positions: (T + 1) / 2 under a causal mask, T without
    one; a causal sliding window of w keys caps each position at w."""
    if not causal:
        return float(seq_len)
    if window is None or seq_len <= window:
        return (seq_len + 1) / 2
    return (window * (window + 1) / 2 + (seq_len - window) * window) / seq_len


def crossover_length(model: nn.Module | ModelConfig, include_projections: bool = True,
                     max_len: int = 1 << 22) -> int | None:
    """The shortest sequence length at which attention costs more FLOPs per token than the FFN.

    With `include_projections`, attention = projections + scores; else scores only.
    None if the FFN has no cost (attention always dominates) or if never within `max_len`.
    """
    if isinstance(model, ModelConfig):
        model = build_meta(model)

    def attention_wins(t: int) -> bool:
        f = flops_per_token(model, t)
        attn = f["attention_scores"] + (f["attention_proj"] if include_projections else 0.0)
        return attn > f["ffn"]

    if flops_per_token(model, 1)["ffn"] == 0:
        return None
    if not attention_wins(max_len):
        return None
    lo, hi = 1, max_len
    if attention_wins(lo):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if attention_wins(mid) else (mid, hi)
    return hi
