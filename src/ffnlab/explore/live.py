"""What the explorer computes on a typed prompt: sub-updates, logit lens and interventions.

    analyse(ex, text, position)   per layer: the FFN's largest sub-updates m_i v_i at `position` and the tokens
                                  each promotes (Geva et al. 2022), the logit lens just before and just after
                                  the FFN (nostalgebraist 2020); per position, its top neurons over all layers
    Intervention.parse(...)       neurons switched off or scaled and whole FFNs ablated, from URL parameters
    intervene(ex, text, iv)       the output distribution at the last position, clean and under `iv`

Interventions go through `ffnlab.model.hooks` (`ablate`, `scale`): hooks that are removed on exit, so
the shared model is never changed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.device import module_device
from ffnlab.errors import FFNLabError
from ffnlab.explore.explorer import Explorer
from ffnlab.model.hooks import ablate, capture, scale

MAX_CHARS = 2000
MAX_TOKENS = 128
MAX_INTERVENTIONS = 64
MAX_FACTOR = 100.0
LENS_K = 5  # tokens shown per logit-lens cell
SUB_K = 6  # sub-updates shown per layer
SUB_TOKENS = 5  # tokens shown per sub-update
PER_POSITION = 3  # top neurons shown per position
DIST_K = 10  # tokens of the output distribution shown


def encode_prompt(ex: Explorer, text: str) -> list[int]:
    """The prompt's token ids, within the explorer's limits and the model's window."""
    text = text or ""
    if not text.strip():
        raise FFNLabError("the prompt is empty; type some text")
    if len(text) > MAX_CHARS:
        raise FFNLabError(f"the prompt has {len(text)} characters; at most {MAX_CHARS} are accepted")
    ids = ex.opened.encode(text)
    limit = min(MAX_TOKENS, ex.opened.max_positions or MAX_TOKENS)
    if not ids:
        raise FFNLabError("the prompt encodes to no tokens; type some text")
    if len(ids) > limit:
        raise FFNLabError(f"the prompt is {len(ids)} tokens long; at most {limit} are accepted")
    return ids


@dataclass(frozen=True)
class SubUpdateRow:
    neuron: int
    coefficient: float  # m_i
    weight: float  # |m_i| ||v_i||
    tokens: list[str]  # what sign(m_i) v_i promotes most


@dataclass(frozen=True)
class LayerAtPosition:
    layer: int
    before: list[tuple[str, float]]  # logit lens on the stream entering the FFN: (token, probability)
    after: list[tuple[str, float]]  # ... and leaving it
    sub_updates: list[SubUpdateRow]


@dataclass(frozen=True)
class PromptView:
    tokens: list[str]
    position: int
    layers: list[LayerAtPosition]
    top_neurons: list[list[tuple[int, int, float]]]  # per position: (layer, neuron, |m| ||v||)
    output: list[tuple[str, float]]  # the model's distribution at `position`


def _top_tokens(ex: Explorer, logits: Tensor, k: int) -> list[tuple[str, float]]:
    p = logits.float().softmax(-1)
    top = p.topk(k)
    return [(ex.opened.decode([int(t)]), float(v)) for v, t in zip(top.values, top.indices)]


@torch.no_grad()
def analyse(ex: Explorer, text: str, position: int | None = None) -> PromptView:
    ids = encode_prompt(ex, text)
    pos = len(ids) - 1 if position is None else position
    if not 0 <= pos < len(ids):
        raise FFNLabError(f"position {pos} out of range; the prompt has positions 0..{len(ids) - 1}")
    model, n = ex.model, ex.n_layers
    names = [f"blocks.{i}.{site}" for i in range(n) for site in ("hook_resid_mid", "ffn.hook_post", "hook_resid_post")]
    with ex.lock, torch.inference_mode(), capture(model, names) as cache:
        logits = model(torch.tensor([ids], device=module_device(model)))
    with torch.inference_mode():  # the rest reads weights and the head only: no hooks, no lock
        picks, rows, weights = [], [], []
        for i in range(n):
            values = model.ffn_values(i)
            m = cache[f"blocks.{i}.ffn.hook_post"][0].float()  # (T, F)
            w = m.abs() * values.float().norm(dim=1)  # (T, F)
            weights.append(w.cpu())
            order = w[pos].topk(min(SUB_K, w.shape[1])).indices
            picks.append((order, m[pos, order], w[pos, order]))
            rows += [values[order], cache[f"blocks.{i}.hook_resid_mid"][0, pos:pos + 1],
                     cache[f"blocks.{i}.hook_resid_post"][0, pos:pos + 1]]
        # why: one call through the head for every layer's sub-updates and lens rows; the head's weights are
        # read once instead of twice a layer (SmolLM2: 60 calls took 1.3 s, one takes 0.4 s)
        read = model.unembed(torch.cat(rows)[None]).float()[0]  # (n * (SUB_K + 2), V)
        layers, at = [], 0
        for i, (order, coef, weight) in enumerate(picks):
            proj = read[at:at + len(order)] * torch.sign(coef)[:, None]  # what sign(m) v promotes
            before, after = read[at + len(order)], read[at + len(order) + 1]
            at += len(order) + 2
            subs = [SubUpdateRow(int(f), float(c), float(wt), [ex.opened.decode([int(t)])
                                                                for t in proj[j].topk(SUB_TOKENS).indices])
                    for j, (f, c, wt) in enumerate(zip(order.tolist(), coef.tolist(), weight.tolist()))]
            layers.append(LayerAtPosition(i, _top_tokens(ex, before, LENS_K), _top_tokens(ex, after, LENS_K), subs))
    per_pos = []  # each layer's best PER_POSITION at every position, merged (layers may differ in width)
    tops = [w.topk(min(PER_POSITION, w.shape[1]), dim=1) for w in weights]
    for t in range(len(ids)):
        cand = [(i, int(f), float(v)) for i, top in enumerate(tops) for v, f in zip(top.values[t], top.indices[t])]
        per_pos.append(sorted(cand, key=lambda c: -c[2])[:PER_POSITION])
    return PromptView([ex.opened.decode([t]) for t in ids], pos, layers, per_pos,
                      _top_tokens(ex, logits[0, pos], DIST_K))


# -- interventions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Intervention:
    """Neurons switched off, neurons scaled by a factor, and whole FFNs ablated (their output zeroed)."""

    off: tuple[tuple[int, int], ...] = ()
    scaled: tuple[tuple[int, int, float], ...] = ()
    ffns: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.off or self.scaled or self.ffns)

    @classmethod
    def parse(cls, ex: Explorer, off: str = "", scaled: str = "", ffns: str = "") -> Intervention:
        """From URL parameters: off=`L:N,L:N`, scale=`L:N:FACTOR,...`, ffn=`L,L`."""
        offs = tuple(indices(item, 2, "off", "LAYER:NEURON") for item in _items(off))
        scales = []
        for item in _items(scaled):
            parts = item.split(":")
            if len(parts) != 3:
                raise FFNLabError(f"scale item {item!r} is not LAYER:NEURON:FACTOR (e.g. 3:17:2.5)")
            layer, neuron = indices(":".join(parts[:2]), 2, "scale", "LAYER:NEURON:FACTOR")
            try:
                factor = float(parts[2])
            except ValueError:
                factor = math.nan
            if not (math.isfinite(factor) and abs(factor) <= MAX_FACTOR):
                raise FFNLabError(f"scale factor {parts[2]!r} must be a number between -{MAX_FACTOR:g} and "
                                  f"{MAX_FACTOR:g}")
            scales.append((layer, neuron, factor))
        layers = tuple(indices(item, 1, "ffn", "LAYER")[0] for item in _items(ffns))
        iv = cls(offs, tuple(scales), layers)
        count = len(offs) + len(scales) + len(layers)
        if count > MAX_INTERVENTIONS:
            raise FFNLabError(f"{count} interventions; at most {MAX_INTERVENTIONS} are accepted at once")
        for layer, neuron in offs + tuple((a, b) for a, b, _ in scales):
            ex.check_neuron(layer, neuron)
        for layer in layers:
            ex.check_layer(layer)
        return iv

    def query(self) -> dict[str, str]:
        """The URL parameters that `parse` reads back."""
        q = {"off": ",".join(f"{a}:{b}" for a, b in self.off),
             "scale": ",".join(f"{a}:{b}:{f:g}" for a, b, f in self.scaled),
             "ffn": ",".join(str(a) for a in self.ffns)}
        return {k: v for k, v in q.items() if v}

    @contextmanager
    def applied(self, model) -> Iterator[None]:
        by_layer: dict[int, list[int]] = defaultdict(list)
        for layer, neuron in self.off:
            by_layer[layer].append(neuron)
        with ExitStack() as stack:
            for layer, neurons in by_layer.items():
                stack.enter_context(ablate(model, [f"blocks.{layer}.ffn.hook_post"], "zero", neurons=neurons))
            for layer, neuron, factor in self.scaled:
                stack.enter_context(scale(model, f"blocks.{layer}.ffn.hook_post", [neuron], factor))
            if self.ffns:
                stack.enter_context(ablate(model, [f"blocks.{layer}.ffn.hook_out" for layer in self.ffns], "zero"))
            yield


def _items(text: str) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def indices(item: str, n: int, what: str, form: str) -> tuple[int, ...]:
    """`item` as n colon-separated non-negative integers (ASCII digits: '²'.isdigit() holds too)."""
    parts = [p.strip() for p in item.split(":")]
    if len(parts) != n or not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts):
        raise FFNLabError(f"{what} item {item!r} is not {form} with non-negative integers")
    return tuple(int(p) for p in parts)


@dataclass(frozen=True)
class Shift:
    token: str
    clean: float
    intervened: float


@dataclass(frozen=True)
class InterventionView:
    tokens: list[str]
    rows: list[Shift]  # the union of both top-k, by clean probability
    kl: float  # KL(clean || intervened), nats
    top_clean: str
    top_intervened: str


@torch.no_grad()
def intervene(ex: Explorer, text: str, iv: Intervention) -> InterventionView:
    ids = encode_prompt(ex, text)
    x = torch.tensor([ids], device=module_device(ex.model))
    with ex.lock, torch.inference_mode():
        clean = ex.model(x)[0, -1].float().log_softmax(-1).cpu()
        with iv.applied(ex.model):
            after = ex.model(x)[0, -1].float().log_softmax(-1).cpu()
    pc, pa = clean.exp(), after.exp()
    union = list(dict.fromkeys(pc.topk(DIST_K).indices.tolist() + pa.topk(DIST_K).indices.tolist()))
    union.sort(key=lambda t: -float(pc[t]))
    decode = ex.opened.decode
    rows = [Shift(decode([t]), float(pc[t]), float(pa[t])) for t in union]
    kl = float((pc * (clean - after)).sum().clamp(min=0.0))
    return InterventionView([decode([t]) for t in ids], rows, kl, decode([int(pc.argmax())]),
                            decode([int(pa.argmax())]))
