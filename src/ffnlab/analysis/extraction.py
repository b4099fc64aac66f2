"""Attribute extraction (Geva et al. 2023, *Dissecting recall of factual associations*, §5).

At the last position, block attention edges from the last token to a set of source positions
(the subject's tokens, or the other non-subject tokens) in a window of layers around each layer,
and measure the relative change of p(answer). Blocking an edge sets its attention score to -inf
before the softmax, so the remaining weights renormalise (Geva et al.'s knockout). Beside it,
the FFN outputs at the last position are zeroed over the same window: what the MLPs there add.

All windows of one prompt run as the rows of one batched forward, one row per centre layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.analysis.tracing import rome_window
from ffnlab.device import module_device
from ffnlab.errors import FFNLabError
from ffnlab.model.hooks import Hooked, hooks, resolve
from ffnlab.model.names import block_hook


@dataclass
class Extraction:
    """Relative change of p(answer) per centre layer (L,), for each intervention at the last position."""

    p_clean: float
    window: int
    effects: dict[str, Tensor]  # "attn from subject", "attn from non-subject", "ffn at last" -> (L,)


@contextmanager
def blocked(model: Hooked, rows_by_layer: dict[int, list[int]], query: int, keys: Sequence[int]):
    """Block attention from position `query` to positions `keys` in layer l for the batch rows
    `rows_by_layer[l]`, every head. Own models: the probabilities (`attn.hook_pattern`) are edited and
    renormalised. Pretrained models, whose probabilities are read-only: the same -inf entries go in
    through the additive attention mask their attention module takes."""
    from ffnlab.pretrained.sites import PatternSite

    names = {layer: block_hook(layer, "attn.hook_pattern") for layer in rows_by_layer}
    sites = resolve(model, names.values())
    editable = {layer: n for layer, n in names.items() if not isinstance(sites[n], PatternSite)}
    handles = [sites[names[layer]].module.register_forward_pre_hook(_mask_edit(rows, query, keys), with_kwargs=True)
               for layer, rows in rows_by_layer.items() if layer not in editable]
    try:
        with hooks(model, {n: _pattern_edit(rows_by_layer[layer], query, keys) for layer, n in editable.items()}):
            yield
    finally:
        for h in handles:
            h.remove()


def _pattern_edit(rows: list[int], query: int, keys: Sequence[int]):
    def edit(pattern: Tensor) -> Tensor:  # (B, H, T, T)
        pattern = pattern.clone()
        r, k = torch.tensor(rows, device=pattern.device), torch.tensor(list(keys), device=pattern.device)
        sub = pattern[r, :, query]  # (R, H, T)
        sub[:, :, k] = 0
        pattern[r, :, query] = sub / sub.sum(-1, keepdim=True).clamp_min(1e-30)
        return pattern
    return edit


def _mask_edit(rows: list[int], query: int, keys: Sequence[int]):
    def pre(_module, args, kwargs):
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, T, D)
        b, t = x.shape[:2]
        low = torch.finfo(x.dtype).min
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.zeros(t, t, dtype=x.dtype, device=x.device).masked_fill(
                ~torch.ones(t, t, dtype=torch.bool, device=x.device).tril(), low)[None, None]
        elif mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, low)
        mask = mask[..., :t].expand(b, 1, t, t).clone()
        r, k = torch.tensor(rows, device=x.device), torch.tensor(list(keys), device=x.device)
        sub = mask[r, :, query]  # (R, 1, T)
        sub[:, :, k] = low
        mask[r, :, query] = sub
        return args, {**kwargs, "attention_mask": mask}
    return pre


def _prob(model: Hooked, batch: Tensor, answer: int) -> Tensor:
    return model(batch)[:, -1].float().softmax(-1)[:, answer]


@torch.no_grad()
def extraction(model: Hooked, tokens: Sequence[int] | Tensor, subject: tuple[int, int], answer: int,
               window: int) -> Extraction:
    """Knock out, per centre layer l (window `rome_window(l, window, L)`), attention from the last token
    to the subject tokens and to the other non-subject tokens, and zero the FFN output at the last token.
    Effects are (p_knocked - p_clean) / p_clean: -0.5 means the answer lost half its probability."""
    if not model.causal:
        raise FFNLabError("attribute extraction reads the prediction at the last position: it needs a causal model")
    tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
    t, n_layers, device = len(tokens), model.n_layers, module_device(model)
    s0, s1 = subject
    if not 0 <= s0 < s1 < t:
        raise FFNLabError(f"subject span {subject} must end before the prompt's last token ({t} tokens)")
    if window < 1:
        raise FFNLabError(f"the knockout window must be at least 1 layer, got {window}")
    last = t - 1
    batch = tokens[None].expand(n_layers, t).to(device)
    p_clean = float(_prob(model, tokens[None].to(device), answer)[0])
    by_layer: dict[int, list[int]] = {}
    for centre in range(n_layers):
        for layer in rome_window(centre, window, n_layers):
            by_layer.setdefault(layer, []).append(centre)
    effects = {}
    others = [p for p in range(last) if not s0 <= p < s1]
    for label, keys in (("attn from subject", list(range(s0, s1))), ("attn from non-subject", others)):
        if not keys:
            effects[label] = torch.zeros(n_layers)
            continue
        with blocked(model, by_layer, last, keys):
            effects[label] = _prob(model, batch, answer).cpu() / p_clean - 1
    zero = {block_hook(layer, "ffn.hook_out"): _zero_at(rows, last) for layer, rows in by_layer.items()}
    with hooks(model, zero):
        effects["ffn at last"] = _prob(model, batch, answer).cpu() / p_clean - 1
    return Extraction(p_clean, window, effects)


def _zero_at(rows: list[int], pos: int):
    def edit(act: Tensor) -> Tensor:
        act = act.clone()
        act[torch.tensor(rows, device=act.device), pos] = 0
        return act
    return edit
