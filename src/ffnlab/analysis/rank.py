"""Rank collapse: Dong, Cordonnier, Loukas 2021, "Attention is not all you need".

The residual of a sequence's hidden states H (T, D) is res(H) = H - 1 mean_row(H)^T; its
relative size ||res(H)|| / ||H||, with the norm sqrt(||.||_1 ||.||_inf) (maximum column
and row absolute sums), is 0 when every token carries the same vector. Pure attention
drives it to 0 doubly exponentially with depth; skip connections prevent that; the MLP
only slows it.

`surgery` removes parts of every block through hooks only (the weights never change):

    full        the block as trained
    attn+skip   FFN output zeroed; attention inside its skip        (Dong's "SAN + skip")
    attn+ffn    skip around attention removed: resid_mid := resid_mid - resid_pre
                                                                    (Dong's "SAN + MLP")
    attn-only   both: no skip around attention and no FFN           (Dong's pure "SAN")

Ratios cannot be resolved below the rounding of the activations' dtype: a stream whose rows
agree to float precision reads about eps (1.2e-7 in fp32). `RankProfile.floor` (10 eps) marks
that level; below it a stream is "collapsed (below float precision)", not a number to compare.
`across_ffn` measures what each FFN itself does to diversity: ratio(resid_post) / ratio(resid_mid).

The edits use the exact identities of `ffnlab.model.hooks`: resid_mid = resid_pre +
attn.hook_out in both block layouts, so subtracting resid_pre leaves attention's output;
zeroing ffn.hook_out makes resid_post = resid_mid (pre-LN) or = ffn.hook_in, the
normalised resid_mid (post-LN). The ratio is measured on each block's hook_resid_post.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.device import module_device
from ffnlab.errors import unknown
from ffnlab.model.hooks import Edit, hooks
from ffnlab.model.names import block_hook

VARIANTS = ("full", "attn+skip", "attn+ffn", "attn-only")
FLOOR_EPS = 10  # ratios below 10 eps of the activations' dtype are rounding, not structure


def floor_of(dtype: torch.dtype) -> float:
    """The smallest residual ratio activations of `dtype` resolve (see module doc)."""
    return FLOOR_EPS * torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


def describe_ratio(ratio: float, floor: float) -> str:
    """A ratio for a reader: the number, or "collapsed (below float precision)" under the floor."""
    return "collapsed (below float precision)" if ratio < floor else f"{ratio:.3g}"


def dong_norm(x: Tensor) -> Tensor:
    """sqrt(||x||_1 ||x||_inf) of each matrix in a batch (..., T, D) -> (...)."""
    a = x.abs().double()
    one = a.sum(-2).amax(-1)  # largest column sum
    inf = a.sum(-1).amax(-1)  # largest row sum
    return (one * inf).sqrt()


def residual_ratio(h: Tensor) -> Tensor:
    """||res(h)|| / ||h|| per sequence: h (B, T, D) -> (B,)."""
    res = h.double() - h.double().mean(-2, keepdim=True)
    return dong_norm(res) / dong_norm(h).clamp_min(1e-300)


def block_layout(model) -> str:
    """'pre' or 'post' (where the norms sit), from the model's config when it has one."""
    cfg = getattr(model, "config", None)
    return getattr(cfg, "norm_position", "pre")


@contextmanager
def surgery(model, variant: str) -> Iterator[None]:
    """Run `model` with the skip around attention and/or the FFN removed (see module doc)."""
    if variant not in VARIANTS:
        raise unknown("rank surgery variant", variant, VARIANTS)
    edits: dict[str, Edit] = {}
    no_skip = variant in ("attn+ffn", "attn-only")
    no_ffn = variant in ("attn+skip", "attn-only")
    for i in range(model.n_layers):
        if no_skip:
            stash: dict[str, Tensor] = {}

            def keep(x: Tensor, stash=stash) -> None:
                stash["pre"] = x

            def drop_skip(mid: Tensor, stash=stash) -> Tensor:
                return mid - stash.pop("pre")

            edits[block_hook(i, "hook_resid_pre")] = keep
            edits[block_hook(i, "hook_resid_mid")] = drop_skip
        if no_ffn:
            edits[block_hook(i, "ffn.hook_out")] = torch.zeros_like
    with hooks(model, edits):
        yield


@dataclass
class RankProfile:
    """Residual ratio after each block: `mean[l]` over sequences, `per_sequence[b][l]`."""

    variant: str
    mean: list[float]
    per_sequence: list[list[float]]
    embed: float  # the ratio of the embeddings entering block 0
    floor: float = 0.0  # ratios below this are float rounding (`floor_of` the activations' dtype)


def _ratios(model, tokens: Tensor, names: list[str], batch_size: int) -> tuple[dict[str, Tensor], float]:
    """`residual_ratio` of every hook in `names` per sequence of `tokens` (name -> (B,)), and the
    float floor of the activations seen. Only (B,) is kept per hook, never the activation."""
    ratios: dict[str, list[Tensor]] = {name: [] for name in names}
    dtypes: set[torch.dtype] = set()

    def recorder(name: str):
        def record(act: Tensor) -> None:
            ratios[name].append(residual_ratio(act.detach()))
            dtypes.add(act.dtype)
        return record

    device = module_device(model)
    with hooks(model, {name: recorder(name) for name in names}):
        for start in range(0, tokens.shape[0], batch_size):
            model(tokens[start:start + batch_size].to(device))
    return {name: torch.cat(parts).cpu() for name, parts in ratios.items()}, max(map(floor_of, dtypes))


@torch.no_grad()
def rank_collapse(model, tokens: Tensor, variant: str = "full", batch_size: int = 8) -> RankProfile:
    """Dong et al.'s residual ratio per layer for `tokens` (B, T) under `variant`."""
    names = ["hook_embed"] if "hook_embed" in model.hook_sites() else []
    names += [block_hook(i, "hook_resid_post") for i in range(model.n_layers)]
    with surgery(model, variant):
        per_seq, floor = _ratios(model, tokens, names, batch_size)
    layers = torch.stack([per_seq[block_hook(i, "hook_resid_post")] for i in range(model.n_layers)], 1)  # (B, L)
    embed = float(per_seq["hook_embed"].mean()) if names[0] == "hook_embed" else float("nan")
    return RankProfile(variant, layers.mean(0).tolist(), layers.tolist(), embed, floor)


@torch.no_grad()
def across_ffn(model, tokens: Tensor, batch_size: int = 8) -> list[float]:
    """Per layer, the mean over sequences of ratio(resid_post) / ratio(resid_mid): above 1 the FFN
    adds token diversity, below 1 it removes some (pre-LN blocks: resid_post = resid_mid + ffn_out)."""
    n = model.n_layers
    names = [block_hook(i, f"hook_resid_{where}") for i in range(n) for where in ("mid", "post")]
    r, _ = _ratios(model, tokens, names, batch_size)
    return [float((r[block_hook(i, "hook_resid_post")] / r[block_hook(i, "hook_resid_mid")].clamp_min(1e-300)).mean())
            for i in range(n)]


def all_variants(model, tokens: Tensor, batch_size: int = 8) -> dict[str, RankProfile]:
    """`rank_collapse` for each of the four variants."""
    return {v: rank_collapse(model, tokens, v, batch_size) for v in VARIANTS}
