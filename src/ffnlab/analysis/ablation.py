"""Per-layer FFN ablation: how much worse the model gets without each FFN's output.

Each FFN's output (`blocks.{i}.ffn.hook_out`) is replaced by zero, by its mean over a
separate reference batch, or by the output on a random reference sequence at the same
position (resampling ablation, Chan et al. 2022), one layer at a time; the loss increase
over the clean model is that layer's contribution. Zero ablation also removes the
FFN's average effect (a bias), which mean ablation keeps; the gap between the two says
how much of a layer's effect is input-dependent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.device import module_device
from ffnlab.errors import FFNLabError, unknown
from ffnlab.model.hooks import ABLATIONS, ablate, capture, hooks
from ffnlab.model.names import block_hook

LossFn = Callable[[object, Tensor], Tensor]  # (model, tokens (B, T)) -> scalar loss


def causal_lm_loss(model, tokens: Tensor) -> Tensor:
    """Mean next-token cross-entropy (nats) of a causal model on `tokens` (B, T)."""
    logits = model(tokens[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             tokens[:, 1:].reshape(-1))


def ffn_out(layer: int) -> str:
    return block_hook(layer, "ffn.hook_out")


@torch.no_grad()
def mean_loss(model, tokens: Tensor, loss_fn: LossFn, batch_size: int) -> float:
    """Token-weighted mean of `loss_fn` over batches of `tokens` (moved to the model's device)."""
    total, n = 0.0, 0
    device = module_device(model)
    for start in range(0, tokens.shape[0], batch_size):
        part = tokens[start:start + batch_size].to(device)
        total += float(loss_fn(model, part)) * part.shape[0]
        n += part.shape[0]
    return total / n


@torch.no_grad()
def reference_activations(model, reference: Tensor, layers: list[int], batch_size: int = 8,
                          loss_fn: LossFn = causal_lm_loss) -> dict[str, Tensor]:
    """FFN outputs on a reference batch (B', T, D), as `ablate` wants them.

    The reference runs the same way the loss does (through `loss_fn`), so that the
    activations have the positions the evaluated forward has.
    """
    with capture(model, [ffn_out(i) for i in layers]) as cache:
        mean_loss(model, reference, loss_fn, batch_size)
    return dict(cache)


@dataclass
class AblationResult:
    """Loss with each layer's FFN ablated; `increase[how][l]` = ablated - clean."""

    clean: float
    loss: dict[str, list[float]]

    @property
    def increase(self) -> dict[str, list[float]]:
        return {how: [x - self.clean for x in losses] for how, losses in self.loss.items()}


@torch.no_grad()
def ffn_ablation(model, tokens: Tensor, reference: Tensor | None = None,
                 methods: tuple[str, ...] = ABLATIONS, loss_fn: LossFn = causal_lm_loss,
                 batch_size: int = 8, seed: int = 0, progress: bool = False) -> AblationResult:
    """Ablate each layer's FFN output in turn with each of `methods`; evaluate `loss_fn` on `tokens`.

    `reference` (B', T) feeds the mean and resample ablations; it should be held out from
    `tokens` so that the replacement does not carry the evaluated sequence itself.
    """
    for how in methods:
        if how not in ABLATIONS:
            raise unknown("ablation", how, ABLATIONS)
    layers = list(range(model.n_layers))
    refs = None
    if any(how != "zero" for how in methods):
        if reference is None:
            raise FFNLabError("mean and resample ablation need a reference batch of tokens (B', T)")
        refs = reference_activations(model, reference, layers, batch_size, loss_fn)
    clean = mean_loss(model, tokens, loss_fn, batch_size)
    jobs = [(how, i) for how in methods for i in layers]
    if progress:
        from tqdm.auto import tqdm
        jobs = tqdm(jobs, desc="ffn ablation", unit="run")
    loss: dict[str, list[float]] = {how: [] for how in methods}
    for how, i in jobs:
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        with ablate(model, [ffn_out(i)], how, reference=refs, generator=gen):
            loss[how].append(mean_loss(model, tokens, loss_fn, batch_size))
    return AblationResult(clean, loss)


# -- controls: the same ablations of attention, position-wise means, a random direction of the same size ----------
CONTROLLED = ("zero", "mean", "mean-pos", "resample", "random")
COMPONENTS = {"ffn": "ffn.hook_out", "attn": "attn.hook_out"}


def replacement(how: str, act: Tensor, ref: Tensor | None, gen: torch.Generator) -> Tensor:
    """What `how` puts in place of `act` (B, T, D): zero; the reference mean over all tokens (mean) or per
    position (mean-pos); a random reference sequence at the same positions (resample); or the activation
    plus a random direction of its own norm at each position (random: a perturbation the size of zero
    ablation's, in no particular direction)."""
    if how == "zero":
        return torch.zeros_like(act)
    if how == "random":
        noise = torch.randn(act.shape, generator=gen).to(act.device, torch.float32)
        noise = noise * act.float().norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
        return (act.float() + noise).to(act.dtype)
    if ref.shape[1] < act.shape[1]:
        raise FFNLabError(f"the reference has {ref.shape[1]} positions, the input {act.shape[1]}")
    ref = ref[:, :act.shape[1]].float()
    if how == "mean":
        return ref.reshape(-1, ref.shape[-1]).mean(0).expand_as(act).to(act.dtype)
    if how == "mean-pos":
        return ref.mean(0, keepdim=True).expand_as(act).to(act.dtype)
    pick = torch.randint(ref.shape[0], (act.shape[0],), generator=gen)
    return ref[pick].to(act.device, act.dtype)


@dataclass
class ControlledAblation:
    """Loss with one component of one layer ablated: `loss[component][how][layer]`; `increase` = minus clean."""

    clean: float
    loss: dict[str, dict[str, list[float]]]

    def increase(self, component: str, how: str) -> list[float]:
        return [x - self.clean for x in self.loss[component][how]]


@torch.no_grad()
def controlled_ablation(model, tokens: Tensor, reference: Tensor, methods: tuple[str, ...] = CONTROLLED,
                        components: tuple[str, ...] = ("ffn", "attn"), loss_fn: LossFn = causal_lm_loss,
                        batch_size: int = 8, seed: int = 0, progress: bool = False,
                        layers: list[int] | None = None) -> ControlledAblation:
    """`ffn_ablation` with controls: each of `components` ("ffn", "attn") of each of `layers` (default all)
    ablated in turn by each of `methods` (CONTROLLED); `reference` (B', T) is a held-out batch for the mean
    and resample ablations. `loss[component][how][k]` is for the k-th of `layers`."""
    for how in methods:
        if how not in CONTROLLED:
            raise unknown("ablation", how, CONTROLLED)
    for comp in components:
        if comp not in COMPONENTS:
            raise unknown("component", comp, COMPONENTS)
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    names = {comp: [block_hook(i, COMPONENTS[comp]) for i in layers] for comp in components}
    with capture(model, [n for ns in names.values() for n in ns]) as refs:
        mean_loss(model, reference, loss_fn, batch_size)
    clean = mean_loss(model, tokens, loss_fn, batch_size)
    jobs = [(comp, how, k) for comp in components for how in methods for k in range(len(layers))]
    if progress:
        from tqdm.auto import tqdm
        jobs = tqdm(jobs, desc="controlled ablation", unit="run")
    loss = {comp: {how: [] for how in methods} for comp in components}
    for comp, how, k in jobs:
        name, gen = names[comp][k], torch.Generator().manual_seed(seed * 1000 + layers[k])
        with hooks(model, {name: lambda act, n=name, h=how: replacement(h, act, refs[n] if n in refs else None,
                                                                          gen)}):
            loss[comp][how].append(mean_loss(model, tokens, loss_fn, batch_size))
    return ControlledAblation(clean, loss)
