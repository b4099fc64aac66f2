"""TopK transcoders: a wide, sparse MLP trained to imitate one FFN (Dunefsky, Chlenski & Nanda 2024).

    z = TopK_k(ReLU(W_enc (x - b_in) / s_in + b_enc))    # (N, W): k non-zero latents per token
    y_hat = s_out W_dec z + b_dec                          # (N, D): the FFN's output

TopK sparsity instead of an L1 penalty (Gao et al. 2024): the number of active latents is
fixed, nothing to tune. Input and output are centred and scaled to unit mean squared norm
by the first batch's statistics (s_in, s_out), so that the same learning rate suits every
layer of every model. Decoder rows are kept at unit norm; the encoder starts as the
decoder's transpose over sqrt(k). The loss is the MSE normalised by the output's variance,
so 1 - loss is the R² of the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Transcoder(nn.Module):
    """x (..., D) -> y_hat (..., D) through `width` latents, `k` of them active per token."""

    def __init__(self, d_model: int, width: int, k: int, seed: int = 0):
        super().__init__()
        if not 0 < k <= width:
            raise ValueError(f"k must be in 1..width={width}, got {k}")
        self.d_model, self.width, self.k = d_model, width, k
        g = torch.Generator().manual_seed(seed)
        dec = torch.randn(width, d_model, generator=g)
        dec = dec / dec.norm(dim=1, keepdim=True)
        self.w_dec = nn.Parameter(dec)  # (W, D)
        self.w_enc = nn.Parameter(dec.T.clone() / k ** 0.5)  # (D, W)
        self.b_enc = nn.Parameter(torch.zeros(width))
        self.b_in = nn.Parameter(torch.zeros(d_model))
        self.b_dec = nn.Parameter(torch.zeros(d_model))
        self.register_buffer("scale", torch.ones(2))  # s_in, s_out

    @property
    def started(self) -> bool:
        return bool((self.scale != 1).any() or (self.b_dec != 0).any())

    def encode(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., W) with at most k non-zeros per token."""
        pre = torch.relu((x - self.b_in) / self.scale[0] @ self.w_enc + self.b_enc)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, top.values)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale[1] * (self.encode(x) @ self.w_dec) + self.b_dec

    def flops_per_token(self) -> int:
        """Dense encoder plus a k-row decoder (multiply-adds count 2)."""
        return 2 * self.d_model * self.width + 2 * self.k * self.d_model

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class TranscoderTrainer:
    """Adam steps on (x, y) batches as they stream past; nothing is stored between batches."""

    def __init__(self, tc: Transcoder, lr: float = 1e-3):
        self.tc = tc
        self.opt = torch.optim.Adam(tc.parameters(), lr=lr)
        self.steps = 0
        self.last_r2 = float("nan")

    @torch.enable_grad()
    def step(self, x: Tensor, y: Tensor) -> float:
        """One step on x, y (..., D); returns the batch's R² before the step."""
        x = x.reshape(-1, x.shape[-1]).float()
        y = y.reshape(-1, y.shape[-1]).float()
        if self.steps == 0 and not self.tc.started:  # centre and scale: the steps fit structure, not offsets
            with torch.no_grad():
                self.tc.b_dec.copy_(y.mean(0))
                self.tc.b_in.copy_(x.mean(0))
                rms = lambda v: (v - v.mean(0)).square().sum(-1).mean().sqrt().clamp(min=1e-8)  # noqa: E731
                self.tc.scale.copy_(torch.stack([rms(x), rms(y)]))
        var = (y - y.mean(0)).square().sum(-1).mean().clamp(min=1e-12)
        loss = (self.tc(x) - y).square().sum(-1).mean() / var
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.tc.w_dec.div_(self.tc.w_dec.norm(dim=1, keepdim=True).clamp(min=1e-8))
        self.steps += 1
        self.last_r2 = 1 - loss.item()
        return self.last_r2
