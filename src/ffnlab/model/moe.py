"""Mixture of experts: a top-k token-choice router over E expert FFNs.

Router and experts are separate pieces (as in torchtitan); the dispatch is the readable
per-expert loop of litgpt. Load balancing follows Switch Transformer (Fedus et al. 2022):
aux = E * sum_e f_e * P_e, with f_e the share of routed slots that go to expert e and
P_e the mean router probability of e. With a capacity factor, each expert takes at most
ceil(cf * N * k / E) slots, in token order; the rest are dropped (they pass through the
skip connection only). Dropping depends on the other tokens, so a capacity-limited MoE
is not position-wise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

from ffnlab.model.ffn import FFN, build_basic, register
from ffnlab.model.hooks import HookPoint


class Router(nn.Module):
    """Scores each token against each expert and picks its top-k."""

    def __init__(self, d_model: int, n_experts: int, top_k: int):
        super().__init__()
        self.proj = nn.Linear(d_model, n_experts, bias=False)
        self.top_k = top_k
        self.hook_logits = HookPoint()  # (B, T, E)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> probs (N, E), weights (N, k), chosen experts (N, k); N = B*T."""
        logits = self.hook_logits(self.proj(x))
        probs = logits.reshape(-1, logits.shape[-1]).float().softmax(-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            weights = weights / weights.sum(-1, keepdim=True)
        return probs, weights, chosen


@register("moe")
class MoE(FFN):
    """E experts of kind `inner`, each of width F; hook_post is (B, T, E*F), zero where not routed."""

    def __init__(self, d_model: int, d_ff: int, inner: str = "mlp", activation: str = "gelu",
                 bias: bool = True, n_experts: int = 8, top_k: int = 2,
                 capacity_factor: float | None = None, aux_loss_coef: float = 0.01):
        super().__init__(d_model, d_ff * n_experts)
        self.expert_width = d_ff
        self.n_experts, self.top_k = n_experts, top_k
        self.capacity_factor, self.aux_loss_coef = capacity_factor, aux_loss_coef
        self.router = Router(d_model, n_experts, top_k)
        self.experts = nn.ModuleList(build_basic(inner, d_model, d_ff, activation, bias) for _ in range(n_experts))
        self._aux: Tensor | None = None
        self.dropped_fraction = 0.0  # share of routed slots dropped in the last forward

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        x = self.hook_in(x)
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, D)
        n, e, f = flat.shape[0], self.n_experts, self.expert_width
        probs, weights, chosen = self.router(x)

        slots = F_.one_hot(chosen, e).reshape(n * self.top_k, e)  # token-major order
        keep = torch.ones(n * self.top_k, dtype=torch.bool, device=x.device)
        if self.capacity_factor is not None:
            capacity = math.ceil(self.capacity_factor * n * self.top_k / e)
            rank_in_expert = (slots.cumsum(0) - 1)[torch.arange(n * self.top_k), chosen.reshape(-1)]
            keep = rank_in_expert < capacity
        self.dropped_fraction = 1.0 - keep.float().mean().item()
        share = slots.float().mean(0)  # f_e: share of routed slots per expert (no gradient)
        self._aux = self.aux_loss_coef * e * (share * probs.mean(0)).sum()

        token = torch.arange(n, device=x.device).repeat_interleave(self.top_k)
        expert = chosen.reshape(-1)
        gate = weights.reshape(-1)
        dense = self.hook_pre.active or self.hook_post.active
        pre_all = flat.new_zeros(n, e, f) if dense else None
        post_all = flat.new_zeros(n, e, f) if dense else None
        routed: list[tuple[int, Tensor, Tensor, Tensor]] = []
        for i, expert_ffn in enumerate(self.experts):
            sel = keep & (expert == i)
            if not bool(sel.any()):
                continue
            idx, g = token[sel], gate[sel]
            pre = expert_ffn.pre(flat[idx])
            post = expert_ffn.act(pre, flat[idx])
            if dense:
                pre_all[idx, i] = pre
                post_all[idx, i] = post
            routed.append((i, idx, g, post))
        if dense:
            self.hook_pre(pre_all.reshape(*shape[:-1], e * f))
            post_all = self.hook_post(post_all.reshape(*shape[:-1], e * f)).reshape(n, e, f)

        out = torch.zeros_like(flat)
        for i, idx, g, post in routed:
            if dense:
                post = post_all[idx, i]
            y = self.experts[i].down(post)
            out = out.index_add(0, idx, (y * g.to(y.dtype).unsqueeze(-1)).to(out.dtype))  # bf16 autocast: y is bf16
        return self.hook_out(out.reshape(shape))

    def values(self) -> Tensor:
        return torch.cat([expert.values() for expert in self.experts])  # (E*F, D)

    def aux_loss(self) -> Tensor | None:
        return self._aux
