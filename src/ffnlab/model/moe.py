"""Mixture of experts: a top-k token-choice router over E expert FFNs.

Router and experts are separate pieces (as in torchtitan). On a CPU the dispatch is the readable
per-expert loop of litgpt; elsewhere it uses fixed-size per-expert buffers (as in Switch), so the
forward never reads the routing on the host (no GPU synchronisation; it runs on the meta device).
Load balancing follows Switch Transformer (Fedus et al. 2022): aux = E * sum_e f_e * P_e,
with f_e the share of routed slots that go to expert e and P_e the mean router probability
of e. With a capacity factor, each expert takes at most ceil(cf * N * k / E) slots, in token
order; the rest are dropped (they pass through the skip connection only). Dropping depends
on the other tokens, so a capacity-limited MoE is not position-wise.
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
        self._kept: Tensor | None = None  # share of routed slots served in the last forward (0-dim)
        # "indexed": gather each expert's tokens (reads routing on the host: free on a CPU, a sync on a GPU);
        # "padded": fixed-size per-expert buffers, no host reads (accelerators, meta); "auto": by device
        self.dispatch = "auto"

    @property
    def dropped_fraction(self) -> float:
        """Share of routed slots dropped (over capacity) in the last forward; reading it syncs."""
        return 0.0 if self._kept is None else 1.0 - float(self._kept)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        x = self.hook_in(x)
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, D)
        n, e = flat.shape[0], self.n_experts
        probs, weights, chosen = self.router(x)

        slots = F_.one_hot(chosen, e).reshape(n * self.top_k, e)  # token-major order
        expert = chosen.reshape(-1)  # (N*k,)
        capacity = n if self.capacity_factor is None else min(n, math.ceil(self.capacity_factor * n * self.top_k / e))
        rank_in_expert = (slots.cumsum(0) - 1).gather(1, expert[:, None]).squeeze(1)  # (N*k,)
        keep = rank_in_expert < capacity  # an expert takes each token at most once: < n always holds
        self._kept = keep.float().mean().detach()
        share = slots.float().mean(0)  # f_e: share of routed slots per expert (no gradient)
        self._aux = self.aux_loss_coef * e * (share * probs.mean(0)).sum()

        token = torch.arange(n * self.top_k, device=x.device) // self.top_k  # (N*k,) token of each slot
        gate = weights.reshape(-1)
        padded = self.dispatch == "padded" or (self.dispatch == "auto" and x.device.type != "cpu")
        if padded:
            out = self._padded(shape, flat, token, expert, gate, keep, rank_in_expert, capacity)
        else:
            out = self._indexed(shape, flat, token, expert, gate, keep)
        return self.hook_out(out.reshape(shape))

    def _dense_hooks(self, shape: torch.Size, pre: Tensor, post: Tensor) -> Tensor:
        """Show (N, E, F) activations to hook_pre / hook_post as (B, T, E*F); returns post as edited."""
        n, e, f = pre.shape
        self.hook_pre(pre.reshape(*shape[:-1], e * f))
        return self.hook_post(post.reshape(*shape[:-1], e * f)).reshape(n, e, f)

    def _indexed(self, shape: torch.Size, flat: Tensor, token: Tensor, expert: Tensor, gate: Tensor,
                 keep: Tensor) -> Tensor:
        """The litgpt loop: each expert runs on exactly the tokens routed to it."""
        n, e, f = flat.shape[0], self.n_experts, self.expert_width
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
            if dense:  # the dense views keep the input's dtype (under autocast, pre and post are bf16)
                pre_all[idx, i] = pre.to(pre_all.dtype)
                post_all[idx, i] = post.to(post_all.dtype)
            routed.append((i, idx, g, post))
        if dense:
            post_all = self._dense_hooks(shape, pre_all, post_all)

        out = torch.zeros_like(flat)
        for i, idx, g, post in routed:
            if dense:
                post = post_all[idx, i]
            y = self.experts[i].down(post)
            out = out.index_add(0, idx, (y * g.to(y.dtype).unsqueeze(-1)).to(out.dtype))  # bf16 autocast: y is bf16
        return out

    def _padded(self, shape: torch.Size, flat: Tensor, token: Tensor, expert: Tensor, gate: Tensor, keep: Tensor,
                rank: Tensor, capacity: int) -> Tensor:
        """Switch-style dispatch: slot s fills row `rank[s]` of expert `expert[s]`'s buffer of `capacity` rows.

        Every shape is known without reading the routing; unused rows are computed and never read.
        """
        n, e, c = flat.shape[0], self.n_experts, capacity
        dest = torch.where(keep, expert * c + rank, e * c)  # (N*k,) buffer row; dropped slots: a spare row

        def buffer(slot_values: Tensor) -> Tensor:  # (N*k, X) -> (E*C, X)
            return slot_values.new_zeros(e * c + 1, slot_values.shape[1]).index_put((dest,), slot_values)[:-1]

        def of_slots(rows: Tensor) -> Tensor:  # (E*C, X) -> (N*k, X), 0 for dropped slots
            return torch.cat([rows, rows.new_zeros(1, rows.shape[1])])[dest]

        def each(fn, *bufs: Tensor) -> Tensor:  # run expert i's `fn` on its C rows of each buffer
            return torch.cat([fn(ffn)(*(b[i * c:(i + 1) * c] for b in bufs)) for i, ffn in enumerate(self.experts)])

        inputs = buffer(flat[token])  # (E*C, D)
        pre = each(lambda ffn: ffn.pre, inputs)  # (E*C, F)
        post = each(lambda ffn: ffn.act, pre, inputs)
        if self.hook_pre.active or self.hook_post.active:
            where = (token, expert)
            pre_all = flat.new_zeros(n, e, self.expert_width).index_put(where, of_slots(pre).to(flat.dtype))
            post_all = flat.new_zeros(n, e, self.expert_width).index_put(where, of_slots(post).to(flat.dtype))
            post = buffer(self._dense_hooks(shape, pre_all, post_all)[where].to(post.dtype))
        y = of_slots(each(lambda ffn: ffn.down, post))  # (N*k, D)
        return torch.zeros_like(flat).index_add(0, token, (y * gate.to(y.dtype).unsqueeze(-1)).to(flat.dtype))

    def values(self) -> Tensor:
        return torch.cat([expert.values() for expert in self.experts])  # (E*F, D)

    def aux_loss(self) -> Tensor | None:
        return self._aux
