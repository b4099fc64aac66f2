"""Path patching into each FFN: does FFN l read what its own layer's attention wrote?

The FFN of block l reads norm(resid_pre_l + attn_out_l) (pre-LN; LN of the same sum in
post-LN blocks). Path patching (Wang et al. 2022; Goldowsky-Dill et al. 2023) replaces one
path only: attention's output on this input, as it reaches FFN l, by its value on another
input x'. Adding `delta = attn_out_l(x') - attn_out_l(x)` at `blocks.{l}.attn.hook_out` and
reading `blocks.{l}.ffn.hook_out` in the same forward does exactly that: the FFN's input is
resid_pre_l(x) + attn_out_l(x'), and nothing downstream of FFN l is read (the forward stops
there), so the rest of the stream is irrelevant to the measurement. Parallel blocks, whose
FFN reads resid_pre, show no effect, as they should.

The effect is the relative change of FFN l's output, sqrt(sum ||f' - f||^2 / sum ||f||^2)
per sequence. Two controls of the same size (norm-matched per position to `delta`) go into
the same path:
    earlier    the change x -> x' of a random earlier component (the embedding, or an
               attention or FFN output of a layer below l), rescaled to |delta| per position
    random     an isotropic random direction of norm |delta| per position
so "the FFN responds to its attention's output" is judged against "the FFN responds to any
change of its input of that size". The unscaled earlier change is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.device import module_device
from ffnlab.model.hooks import capture, hook_point_sites, hooks
from ffnlab.model.names import block_hook

CONTROLS = ("earlier", "random")


class _Stop(Exception):
    """Raised from a hook to end a forward once the activation it needs has been read."""


def _sites(model) -> dict:
    return model.hook_sites() if hasattr(model, "hook_sites") else hook_point_sites(model)


def components(model, layer: int) -> list[str]:
    """The hook names of the components written to the stream before FFN `layer` reads it, except
    attention `layer` itself: the embedding (where the model names one), attention and FFN outputs below."""
    names = ["hook_embed"] if "hook_embed" in _sites(model) else []
    for j in range(layer):
        names += [block_hook(j, "attn.hook_out"), block_hook(j, "ffn.hook_out")]
    return names


@torch.no_grad()
def _ffn_out_with(model, tokens: Tensor, layer: int, delta: Tensor) -> Tensor:
    """FFN `layer`'s output (B, T, D) when `delta` is added to attention `layer`'s output; the forward
    stops right after it."""
    out: list[Tensor] = []

    def add(act: Tensor) -> Tensor:
        return act + delta.to(act.dtype)

    def read(act: Tensor) -> None:
        out.append(act.detach().float())
        raise _Stop

    try:
        with hooks(model, {block_hook(layer, "attn.hook_out"): add, block_hook(layer, "ffn.hook_out"): read}):
            model(tokens)
    except _Stop:
        pass
    return out[0]


def _relative_change(new: Tensor, clean: Tensor) -> Tensor:
    """Per sequence: sqrt(sum over positions of ||new - clean||^2 / sum of ||clean||^2) -> (B,)."""
    return ((new - clean).pow(2).sum((1, 2)) / clean.pow(2).sum((1, 2)).clamp_min(1e-30)).sqrt()


def _norm_matched(direction: Tensor, like: Tensor) -> Tensor:
    """`direction` rescaled per position to the norm of `like` (both (B, T, D))."""
    scale = like.norm(dim=-1, keepdim=True) / direction.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return direction * scale


@dataclass
class PathResult:
    """Per layer, one value per sequence (relative change of FFN l's output), for the patched path
    and each control (empty for a layer not measured); `source[l]` names the earlier component used
    as layer l's control."""

    attn: list[list[float]]
    earlier: list[list[float]]
    random: list[list[float]]
    earlier_raw: list[list[float]]
    source: list[str]

    def selectivity(self, control: str = "earlier") -> list[list[float]]:
        """Per layer and sequence: (attn - control) / (attn + control), in [-1, 1]; > 0 when FFN l moves
        more under its attention's change than under a same-size control change."""
        ctrl = getattr(self, control)
        return [[(a - c) / (a + c) if a + c > 0 else 0.0 for a, c in zip(al, cl)]
                for al, cl in zip(self.attn, ctrl)]

    @property
    def measured(self) -> list[int]:
        """The layers that were patched."""
        return [i for i, values in enumerate(self.attn) if values]


@torch.no_grad()
def path_patching(model, tokens: Tensor, other: Tensor, seed: int = 0, batch_size: int = 8,
                  layers: list[int] | None = None) -> PathResult:
    """Path-patch attention l -> FFN l with `other` (B, T) as the source input, for each of `layers`
    (default all), against the two norm-matched controls (module docstring); `tokens` (B, T) are the
    inputs. The control sources are drawn for every layer, so a subset sees the same ones."""
    if tokens.shape != other.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and other {tuple(other.shape)} must have one shape")
    n_layers, device = model.n_layers, module_device(model)
    gen = torch.Generator().manual_seed(seed)
    sources = []
    for layer in range(n_layers):
        earlier = components(model, layer)
        sources.append(earlier[int(torch.randint(len(earlier), (1,), generator=gen))] if earlier else "")
    names = sorted({block_hook(i, s) for i in range(n_layers) for s in ("attn.hook_out", "ffn.hook_out")}
                   | {s for s in sources if s})
    per = {k: [[] for _ in range(n_layers)] for k in ("attn", "earlier", "random", "earlier_raw")}
    for start in range(0, tokens.shape[0], batch_size):
        x, x2 = tokens[start:start + batch_size].to(device), other[start:start + batch_size].to(device)
        with capture(model, names) as a:
            model(x)
        with capture(model, names) as b:
            model(x2)
        for layer in range(n_layers) if layers is None else layers:
            clean = a[block_hook(layer, "ffn.hook_out")].float()
            delta = (b[block_hook(layer, "attn.hook_out")] - a[block_hook(layer, "attn.hook_out")]).float()
            noise = torch.randn(delta.shape, generator=gen).to(delta.device)
            runs = {"attn": delta, "random": _norm_matched(noise, delta)}
            if sources[layer]:
                change = (b[sources[layer]] - a[sources[layer]]).float()
                runs["earlier"], runs["earlier_raw"] = _norm_matched(change, delta), change
            for key, d in runs.items():
                per[key][layer] += _relative_change(_ffn_out_with(model, x, layer, d), clean).tolist()
    return PathResult(per["attn"], per["earlier"], per["random"], per["earlier_raw"], sources)
