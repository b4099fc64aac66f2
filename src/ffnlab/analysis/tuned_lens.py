"""Tuned lens (Belrose et al. 2023, *Eliciting latent predictions from transformers with the tuned lens*).

The logit lens reads an intermediate stream h through the model's own final norm and head.
In mid layers of real models the stream is in a different basis than the head expects, so
the logit lens can sit far from the final prediction (SmolLM2: 14-18 nats mid-stack) and
says little about what a sub-layer adds. The tuned lens puts a learned affine translator in
front of the head for each site s: lens_s(h) = unembed(h + A_s h + b_s), A_s and b_s starting
at zero (the identity translator, i.e. the logit lens), trained to minimise KL(final || lens)
at the same position on training text.

Training recipe of the reference implementation (github.com/AlignmentResearch/tuned-lens,
`tuned_lens/scripts/train_loop.py` and `ingredients.py`): KL loss to the final log-probs with
no token shift, SGD with Nesterov momentum 0.9 at lr 1.0 x (1 - 0.9), linear decay to zero
without warm-up, gradients clipped to norm 1 over all translators, 250 steps of 2^18 tokens.
Ours keeps the loss, optimiser, schedule and clipping and scales steps and tokens down to the
model (`LensConfig`); translators are trained for every site at once from one forward.

Sites: the stream before attention l (`hook_resid_pre`), before FFN l (`hook_resid_mid`) and
after it (`hook_resid_post`); in pre-LN blocks resid_post of l is resid_pre of l + 1 (checked
numerically) and shares its translator. `lens_kl` gives KL(final || lens) per site and
sequence for both lenses, so that the drop across attention and across the FFN compare.

Translators (S x (D x D + D) floats) are cached as safetensors under the results directory,
keyed by the caller's model key, the training config and this module's code fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ffnlab.device import module_device
from ffnlab.model.hooks import capture
from ffnlab.model.names import block_hook


@dataclass(frozen=True)
class LensConfig:
    """Translator training: `steps` SGD steps, each on `batch` sequences (Belrose et al.: 250 x 2^18 tokens)."""

    steps: int = 250
    lr_scale: float = 1.0
    momentum: float = 0.9
    clip: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1 or not 0 <= self.momentum < 1 or self.lr_scale <= 0:
            raise ValueError(f"bad tuned-lens config {self}")


def stream_sites(layers: Sequence[int]) -> list[tuple[str, str, str]]:
    """Per layer, the names of the stream before attention, before the FFN and after it."""
    return [(block_hook(i, "hook_resid_pre"), block_hook(i, "hook_resid_mid"), block_hook(i, "hook_resid_post"))
            for i in layers]


def lens_sites(model, probe: Tensor, layers: Sequence[int] | None = None) -> tuple[list[str], dict[str, str]]:
    """(distinct sites to translate, alias -> site) for `layers` (default all): resid_post of l is an alias of
    resid_pre of l + 1 where both are asked for and are the same tensor on `probe` (pre-LN blocks), so each
    stream gets one translator."""
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    sites = dict(zip(layers, stream_sites(layers)))
    names = [n for triple in sites.values() for n in triple]
    with capture(model, names) as cache, torch.no_grad():
        model(probe.to(module_device(model)))
    alias = {}
    for i in layers:
        if i + 1 in sites and torch.equal(cache[sites[i][2]], cache[sites[i + 1][0]]):
            alias[sites[i][2]] = sites[i + 1][0]
    return [n for n in names if n not in alias], alias


class Translators(nn.Module):
    """One affine translator per site, h -> h + h A_s^T + b_s, zero-initialised (the identity)."""

    def __init__(self, sites: list[str], d_model: int):
        super().__init__()
        self.sites = list(sites)
        self.weight = nn.Parameter(torch.zeros(len(sites), d_model, d_model))
        self.bias = nn.Parameter(torch.zeros(len(sites), d_model))

    def forward(self, site: str, h: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        s = self.sites.index(site)
        h = h.float()
        return h + h @ self.weight[s].T + self.bias[s]


def _kl(final_logp: Tensor, logits: Tensor) -> Tensor:
    """KL(final || lens) per token (B, T)."""
    return (final_logp.exp() * (final_logp - logits.float().log_softmax(-1))).sum(-1)


def cache_key(model_key: str, cfg: LensConfig, n_batches: int, tokens: int, layers: Sequence[int] | None = None) -> str:
    """The cache name of translators for this model, training config and data, and this module's code."""
    from ffnlab.fingerprint import code_fingerprint

    text = json.dumps([model_key, asdict(cfg), n_batches, tokens, layers and list(layers), code_fingerprint(__name__)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_translators(model, batches: Iterable[Tensor], cfg: LensConfig = LensConfig(),
                      cache: str | Path | None = None, layers: Sequence[int] | None = None
                      ) -> tuple[Translators, dict[str, str], list[float]]:
    """Train translators for the stream sites of `layers` (default all; `lens_sites`) on `batches` ((B, T)
    token tensors, cycled for `cfg.steps` steps).

    Returns (translators, aliases, mean training KL per step over sites). With `cache` (a .safetensors
    path), stored translators are loaded instead of trained, and freshly trained ones are saved there.
    Only the translators get gradients (`torch.autograd.grad`): the model is never changed.
    """
    batches = list(batches)
    device = module_device(model)
    sites, alias = lens_sites(model, batches[0][:1], layers)
    with torch.no_grad():
        width = _width(model, batches[0][:1])
    lens = Translators(sites, width).to(device)
    if cache is not None and Path(cache).is_file():
        return _load(lens, Path(cache)), alias, []
    beta = cfg.momentum
    opt = torch.optim.SGD(lens.parameters(), lr=cfg.lr_scale * (1 - beta), momentum=beta, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1 - step / cfg.steps))
    params, history = [lens.weight, lens.bias], []
    for step in range(cfg.steps):
        tokens = batches[step % len(batches)].to(device)
        with torch.no_grad(), capture(model, sites) as stream:
            final_logp = model(tokens).float().log_softmax(-1)
        grads, total = [torch.zeros_like(p) for p in params], 0.0
        for site in sites:  # one site at a time keeps one (B, T, V) graph in memory
            with torch.enable_grad():
                h = lens(site, stream[site])
                loss = _kl(final_logp, model.unembed(h.to(stream[site].dtype))).mean()
                for g, part in zip(grads, torch.autograd.grad(loss, params)):
                    g += part
            total += float(loss.detach())
        for p, g in zip(params, grads):
            p.grad = g
        nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        history.append(total / len(sites))
    if cache is not None:
        _save(lens, Path(cache))
    return lens, alias, history


def _width(model, probe: Tensor) -> int:
    with capture(model, [block_hook(0, "hook_resid_pre")]) as c:
        model(probe.to(module_device(model)))
    return c[block_hook(0, "hook_resid_pre")].shape[-1]


def _save(lens: Translators, path: Path) -> None:
    from safetensors.torch import save

    from ffnlab.results import atomic_write_bytes

    atomic_write_bytes(path, save({"weight": lens.weight.detach().cpu().contiguous(),
                                   "bias": lens.bias.detach().cpu().contiguous()},
                                  metadata={"sites": json.dumps(lens.sites)}))


def _load(lens: Translators, path: Path) -> Translators:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        if json.loads(f.metadata()["sites"]) != lens.sites:
            raise ValueError(f"cached translators at {path} are for other sites")
        with torch.no_grad():
            lens.weight.copy_(f.get_tensor("weight"))
            lens.bias.copy_(f.get_tensor("bias"))
    return lens


@dataclass
class LensKL:
    """KL(final || lens) per layer and sequence, at the stream before attention, before the FFN and after it,
    for the logit lens (`logit`) and the tuned lens (`tuned`): `kl[lens][where][k]` -> list over sequences,
    for the k-th of `layers`."""

    kl: dict[str, dict[str, list[list[float]]]]
    layers: list[int]

    def mean(self, lens: str, where: str) -> list[float]:
        return [sum(v) / len(v) for v in self.kl[lens][where]]

    def drop(self, lens: str, across: str) -> list[list[float]]:
        """Per layer and sequence, how far KL falls across `across` ("attn" or "ffn")."""
        a, b = ("pre", "mid") if across == "attn" else ("mid", "post")
        return [[x - y for x, y in zip(xs, ys)] for xs, ys in zip(self.kl[lens][a], self.kl[lens][b])]


@torch.no_grad()
def lens_kl(model, tokens: Tensor, lens: Translators, alias: dict[str, str], batch_size: int = 8,
            layers: Sequence[int] | None = None) -> LensKL:
    """Both lenses at the stream sites of `layers` (default all) on `tokens` (B, T); per-sequence means over
    positions. The translators must cover those sites."""
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    sites = stream_sites(layers)
    out = {k: {w: [[] for _ in sites] for w in ("pre", "mid", "post")} for k in ("logit", "tuned")}
    names = sorted({n for triple in sites for n in triple})
    device = module_device(model)
    for start in range(0, tokens.shape[0], batch_size):
        part = tokens[start:start + batch_size].to(device)
        with capture(model, names) as stream:
            final_logp = model(part).float().log_softmax(-1)
        for i, triple in enumerate(sites):
            for where, name in zip(("pre", "mid", "post"), triple):
                h = stream[name]
                tuned = lens(alias.get(name, name), h).to(h.dtype)
                out["logit"][where][i] += _kl(final_logp, model.unembed(h)).mean(-1).tolist()
                out["tuned"][where][i] += _kl(final_logp, model.unembed(tuned)).mean(-1).tolist()
    return LensKL(out, layers)
