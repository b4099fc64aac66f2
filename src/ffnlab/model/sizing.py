"""Exact parameter counts from configs, and widths/depths that equalise them.

Counts come from building the model on the `meta` device: exact for every variant, and
free of memory or time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ffnlab.model.config import FFNConfig, ModelConfig


def count_params(cfg: ModelConfig) -> int:
    """Parameters of the model `cfg` describes (tied weights counted once)."""
    from ffnlab.model.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    return sum(p.numel() for p in model.parameters())


def ffn_params(ffn: FFNConfig, d_model: int) -> int:
    """Parameters of one FFN layer of config `ffn` (for `shared`: of the one shared core)."""
    from ffnlab.model.transformer import make_ffn

    cfg = ModelConfig(d_model=d_model, n_heads=1, n_layers=1, ffn=ffn)
    shared: dict = {}
    with torch.device("meta"):
        module = make_ffn(cfg, 0, shared)
    core = shared.get("core", module)
    return sum(p.numel() for p in core.parameters())


def _closest(lo: int, hi: int, size: Callable[[int], int], target: int) -> int:
    """The argument in [lo, hi] whose (increasing) size is closest to target."""
    a, b = lo, hi
    while b - a > 1:
        mid = (a + b) // 2
        if size(mid) < target:
            a = mid
        else:
            b = mid
    return min((a, b), key=lambda n: abs(size(n) - target))


def match_d_ff(reference: FFNConfig, kind: str, d_model: int, **changes: object) -> FFNConfig:
    """An FFN of `kind` with `d_ff` chosen so it has as many parameters as `reference`.

    E.g. a gated FFN matched to a 4x MLP gets d_ff close to 2/3 of 4*d_model (Shazeer 2020).
    """
    target = ffn_params(reference, d_model)
    base = FFNConfig(kind=kind, **{k: v for k, v in {
        "activation": reference.activation, "bias": reference.bias, **changes}.items()})
    d_ff = _closest(1, 64 * d_model, lambda n: ffn_params(base.replace(d_ff=n), d_model), target)
    return base.replace(d_ff=d_ff)


def match_depth(cfg: ModelConfig, target: int) -> ModelConfig:
    """`cfg` with n_layers chosen so its parameter count is closest to `target`."""
    n = _closest(1, 256, lambda n: count_params(cfg.replace(n_layers=n)), target)
    return cfg.replace(n_layers=n)


def match_width(cfg: ModelConfig, target: int) -> ModelConfig:
    """`cfg` with d_model (a multiple of n_heads, even per head) closest to `target` parameters."""
    step = cfg.n_heads * 2
    units = _closest(1, 4096 // step + 1, lambda u: count_params(cfg.replace(d_model=u * step)), target)
    return cfg.replace(d_model=units * step)
