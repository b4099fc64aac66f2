"""Multi-head self-attention on `scaled_dot_product_attention`, with optional rotary positions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

from ffnlab.model.config import ModelConfig
from ffnlab.model.hooks import HookPoint


def rotary_tables(head_dim: int, max_len: int, base: float) -> tuple[Tensor, Tensor]:
    """cos and sin tables (T, dh) for rotary positions (Su et al. 2021), half-split layout."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv)  # (T, dh/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, dh) by position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Attention(nn.Module):
    """`proj(softmax(q k^T / sqrt(dh)) v)` over H heads.

    The attention pattern is only materialised when `hook_pattern` is hooked; otherwise
    the fused SDPA kernel runs. Both paths compute the same function.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim, self.causal = cfg.n_heads, cfg.head_dim, cfg.causal
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.attn_bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.attn_bias)
        self.hook_pattern = HookPoint()  # (B, H, T, T)
        self.hook_z = HookPoint()  # (B, T, D) concatenated heads
        self.hook_out = HookPoint()  # (B, T, D)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None,
                pad_mask: Tensor | None = None) -> Tensor:
        """x (B, T, D); pad_mask (B, T) bool, True where a token may be attended to."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, dh)
        if rotary is not None:
            cos, sin = rotary[0][:t], rotary[1][:t]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        mask = None
        if pad_mask is not None:
            mask = pad_mask[:, None, None, :]  # (B, 1, 1, T)
            if self.causal:
                mask = mask & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        dropout = self.dropout if self.training else 0.0
        if self.hook_pattern.active:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, T)
            allowed = mask
            if allowed is None and self.causal:
                allowed = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            pattern = self.hook_pattern(scores.softmax(-1))
            z = F_.dropout(pattern, dropout, self.training) @ v
        else:
            z = F_.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                is_causal=self.causal and mask is None)
        z = self.hook_z(z.transpose(1, 2).reshape(b, t, d))
        return self.hook_out(self.proj(z))
