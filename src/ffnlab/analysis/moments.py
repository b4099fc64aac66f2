"""Streamed second moments of paired activations, and the linear maps they determine.

    m = Moments(d_in, d_out)
    for x, y in batches:            # x (N, D_in), y (N, D_out): e.g. an FFN's input and output
        m.add(x, y)
    m.merge(other)                  # moments of two shards of tokens, exactly (float64 sums)
    w, b = m.affine(ridge=1e-6)     # least-squares y ≈ x @ w + b
    w, b = m.reduced_rank(64)       # the best rank-64 affine map (reduced-rank regression)

Memory is O(D_in·(D_in + D_out) + D_out²), whatever the number of tokens. The sums are
raw (not centred), in float64, so `add` and `merge` are plain additions and sharded
statistics merge exactly; centring happens once, when a map is solved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.errors import FFNLabError

STATE = ("n", "sum_x", "sum_y", "xx", "xy", "yy")


@dataclass
class Moments:
    """Sums over tokens of x, y, x xᵀ, x yᵀ and y yᵀ (float64)."""

    n: Tensor
    sum_x: Tensor  # (D_in,)
    sum_y: Tensor  # (D_out,)
    xx: Tensor  # (D_in, D_in)
    xy: Tensor  # (D_in, D_out)
    yy: Tensor  # (D_out, D_out)

    @classmethod
    def zeros(cls, d_in: int, d_out: int, device: torch.device | str = "cpu") -> Moments:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(()), z(d_in), z(d_out), z(d_in, d_in), z(d_in, d_out), z(d_out, d_out))

    def add(self, x: Tensor, y: Tensor) -> None:
        """Add tokens: x (..., D_in), y (..., D_out) with the same leading shape."""
        x = x.reshape(-1, x.shape[-1]).to(self.xx.device, torch.float64)
        y = y.reshape(-1, y.shape[-1]).to(self.xx.device, torch.float64)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} tokens, y {y.shape[0]}")
        self.n += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.yy += y.T @ y

    def merge(self, other: Moments) -> Moments:
        """Add another shard's moments (in place); returns self."""
        for k in STATE:
            getattr(self, k).add_(getattr(other, k).to(getattr(self, k).device))
        return self

    def state_dict(self, prefix: str = "") -> dict[str, Tensor]:
        return {prefix + k: getattr(self, k) for k in STATE}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], prefix: str = "") -> Moments:
        return cls(*(state[prefix + k].to(torch.float64) for k in STATE))

    # -- what the moments determine -----------------------------------------------------------
    def means(self) -> tuple[Tensor, Tensor]:
        if self.n.item() < 2:
            raise FFNLabError(f"a linear fit needs at least 2 tokens, got {int(self.n.item())}")
        return self.sum_x / self.n, self.sum_y / self.n

    def covariances(self) -> tuple[Tensor, Tensor, Tensor]:
        """Centred (biased) covariances C_xx, C_xy, C_yy."""
        mx, my = self.means()
        return (self.xx / self.n - torch.outer(mx, mx), self.xy / self.n - torch.outer(mx, my),
                self.yy / self.n - torch.outer(my, my))

    def affine(self, ridge: float = 1e-6) -> tuple[Tensor, Tensor]:
        """Least-squares y ≈ x w + b: w (D_in, D_out), b (D_out,), float64.

        Ridge λ = `ridge` × mean eigenvalue of C_xx (scale-free); it only matters where C_xx is
        near-singular (e.g. RMSNorm outputs lie close to a sphere).
        """
        cxx, cxy, _ = self.covariances()
        lam = ridge * torch.diagonal(cxx).mean().clamp(min=1e-30)
        w = torch.linalg.solve(cxx + lam * torch.eye(cxx.shape[0], dtype=cxx.dtype, device=cxx.device), cxy)
        mx, my = self.means()
        return w, my - mx @ w

    def reduced_rank(self, rank: int, ridge: float = 1e-6) -> tuple[Tensor, Tensor]:
        """The best rank-`rank` affine map (reduced-rank regression, Izenman 1975).

        w_r = w P_r, with P_r the projection on the top-`rank` principal directions of the
        fitted values x w: minimises the squared error among maps of rank <= `rank`.
        """
        w, _ = self.affine(ridge)
        cxx, _, _ = self.covariances()
        fitted = w.T @ cxx @ w  # (D_out, D_out) covariance of the fitted values
        _, vecs = torch.linalg.eigh(fitted)
        top = vecs[:, -rank:] if rank > 0 else vecs[:, :0]  # eigh sorts ascending
        w_r = w @ top @ top.T
        mx, my = self.means()
        return w_r, my - mx @ w_r

    def r2(self, w: Tensor, b: Tensor) -> float:
        """R² of y ≈ x w + b on the tokens the moments hold (from the moments alone)."""
        cxx, cxy, cyy = self.covariances()
        mx, my = self.means()
        bias = mx @ w + b - my  # mean error
        res = torch.trace(cyy) - 2 * torch.trace(w.T @ cxy) + torch.trace(w.T @ cxx @ w) + bias @ bias
        return float(1 - res / torch.trace(cyy).clamp(min=1e-30))
