"""Hook points and interventions, after TransformerLens' `HookPoint` and baukit's `TraceDict`.

Every model ffnlab analyses (its own, and pretrained models through an adapter) exposes
`hook_sites() -> {name: HookSite}` with the same stable names:

    hook_embed                      (B, T, D) embeddings entering block 0
    blocks.{i}.hook_resid_pre       (B, T, D) the stream entering block i
    blocks.{i}.attn.hook_pattern    (B, H, T, T) attention probabilities (computed only when hooked)
    blocks.{i}.attn.hook_z          (B, T, H*dh) concatenated heads before the output projection
    blocks.{i}.attn.hook_out        (B, T, D) attention output
    blocks.{i}.hook_resid_mid       (B, T, D) stream after attention (pre-norm sum in post-LN blocks)
    blocks.{i}.ffn.hook_in          (B, T, D) what the FFN reads (normalised)
    blocks.{i}.ffn.hook_pre         (B, T, F) hidden pre-activation (the gate's, for gated FFNs)
    blocks.{i}.ffn.hook_post        (B, T, F) neuron activations (act(gate) * up for gated FFNs)
    blocks.{i}.ffn.hook_out         (B, T, D) FFN output
    blocks.{i}.hook_resid_post      (B, T, D) stream after the FFN (pre-norm sum in post-LN blocks)
    hook_final                      (B, T, D) stream entering the head (after the final norm)

Identities that hold exactly: resid_mid = resid_pre + attn.hook_out and
resid_post = ffn.hook_in + ffn.hook_out in post-LN blocks, = resid_mid + ffn.hook_out in pre-LN.

Interventions are context managers that always remove their hooks, also when the forward
raises; they never change the model's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor, nn

from ffnlab.errors import FFNLabError, unknown

Edit = Callable[[Tensor], Tensor | None]  # gets an activation, may return a replacement


class HookPoint(nn.Module):
    """Identity module: a named place where activations can be read or replaced."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    @property
    def active(self) -> bool:
        """True while something is hooked here (lets a module compute an optional tensor)."""
        return bool(self._forward_hooks)


@dataclass(frozen=True)
class HookSite:
    """Where a named activation lives: the output of `module`, or its first positional input.

    `index` picks an element when the module returns (or takes) a tuple.
    """

    module: nn.Module
    where: Literal["output", "input"] = "output"
    index: int | None = None

    def register(self, fn: Edit) -> torch.utils.hooks.RemovableHandle:
        if self.where == "output":
            def out_hook(_m, _args, output):
                value = output if self.index is None else output[self.index]
                new = fn(value)
                if new is None:
                    return None
                if self.index is None:
                    return new
                return (*output[: self.index], new, *output[self.index + 1:])
            return self.module.register_forward_hook(out_hook)

        def in_hook(_m, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            key = next(iter(kwargs))  # called with keyword arguments only
            new = fn(kwargs[key])
            return None if new is None else (args, {**kwargs, key: new})
        return self.module.register_forward_pre_hook(in_hook, with_kwargs=True)


class Hooked(Protocol):
    """What analyses need of a model: named hook sites (own models and pretrained adapters)."""

    def hook_sites(self) -> dict[str, HookSite]: ...


def hook_point_sites(module: nn.Module) -> dict[str, HookSite]:
    """The sites of every `HookPoint` inside `module`, by dotted name."""
    return {name: HookSite(m) for name, m in module.named_modules() if isinstance(m, HookPoint)}


def resolve(model: Hooked | nn.Module, names: Iterable[str]) -> dict[str, HookSite]:
    """The sites of `names`; a plain module without `hook_sites()` offers its HookPoints."""
    sites = model.hook_sites() if hasattr(model, "hook_sites") else hook_point_sites(model)
    out = {}
    for name in names:
        if name not in sites:
            raise unknown("hook", name, sites)
        out[name] = sites[name]
    return out


@contextmanager
def hooks(model: Hooked, edits: Mapping[str, Edit]) -> Iterator[None]:
    """Run `edits[name]` on each named activation while the context is open."""
    handles = []
    try:
        for name, site in resolve(model, edits).items():
            handles.append(site.register(edits[name]))
        yield
    finally:
        for handle in handles:
            handle.remove()


class Cache(Mapping):
    """Captured activations: `cache[name]` is one tensor, `cache.parts(name)` one per forward.

    Over several forwards, activations are concatenated along the batch dimension
    (`combine="cat"`, the default without a reduction) or stacked along a new first
    dimension (`combine="stack"`, the default with one). Combining happens on access,
    so recording never fails and costs nothing but the list append.
    """

    def __init__(self, names: Sequence[str], combine: str = "cat"):
        if combine not in ("cat", "stack"):
            raise unknown("combine", combine, ("cat", "stack"))
        self._parts: dict[str, list[Tensor]] = {name: [] for name in names}
        self._combine = combine

    def _add(self, name: str, value: Tensor) -> None:
        self._parts[name].append(value)

    def __iter__(self) -> Iterator[str]:
        return (name for name, parts in self._parts.items() if parts)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __getitem__(self, name: str) -> Tensor:
        parts = self._parts.get(name)
        if not parts:
            raise KeyError(name)
        if len(parts) == 1:
            return parts[0]
        try:
            return torch.stack(parts) if self._combine == "stack" else torch.cat(parts)
        except RuntimeError as err:
            raise FFNLabError(f"cannot {self._combine} the {len(parts)} recorded values of {name} "
                              f"({err}); use cache.parts({name!r})") from None

    def parts(self, name: str) -> list[Tensor]:
        """The per-forward values of `name`, in call order."""
        return list(self._parts[name])


@contextmanager
def capture(model: Hooked, names: Iterable[str],
            reduce: Callable[[str, Tensor], Tensor] | None = None,
            device: str | torch.device | None = None, combine: str | None = None) -> Iterator[Cache]:
    """Record the named activations, detached; with `reduce`, keep only `reduce(name, act)`.

    Values stay on the device they were computed on; `device` (e.g. "cpu") moves each one there.

    Nothing is kept that was not asked for: `reduce` runs inside the hook, so a per-batch
    statistic costs the memory of the statistic, not of the activation. `combine` says how
    `cache[name]` joins several forwards: "cat" (batch dim; default without `reduce`) or
    "stack" (new dim; default with `reduce`, e.g. one mean per forward).
    """
    names = list(names)
    cache = Cache(names, combine or ("stack" if reduce is not None else "cat"))

    def recorder(name: str) -> Edit:
        def record(act: Tensor) -> None:
            value = act.detach()
            if reduce is not None:
                value = reduce(name, value)
            cache._add(name, value.to(device) if device is not None else value)
        return record

    with hooks(model, {name: recorder(name) for name in names}):
        yield cache


# -- interventions -------------------------------------------------------------------------

ABLATIONS = ("zero", "mean", "resample")


def _select(neurons: Sequence[int] | Tensor | None) -> slice | Tensor:
    return slice(None) if neurons is None else torch.as_tensor(neurons, dtype=torch.long)


@contextmanager
def ablate(model: Hooked, names: Iterable[str], how: str = "zero",
           neurons: Sequence[int] | Tensor | None = None,
           reference: Mapping[str, Tensor] | None = None,
           generator: torch.Generator | None = None) -> Iterator[None]:
    """Ablate activations: zero them, set them to their mean, or resample them.

    `names` are hook names, e.g. `blocks.3.ffn.hook_out` (a whole FFN) or
    `blocks.3.ffn.hook_post` with `neurons` (chosen neurons, last dim). `mean` and
    `resample` need `reference[name]`: activations of a reference batch (B', T', ...),
    e.g. from `capture`. Mean replaces each position by the reference mean over all
    reference tokens; resample replaces each sequence's activation by that of a random
    reference sequence at the same position (Chan et al. 2022's resampling ablation).
    """
    if how not in ABLATIONS:
        raise unknown("ablation", how, ABLATIONS)
    names = list(names)
    idx = _select(neurons)
    if how != "zero":
        missing = [n for n in names if reference is None or n not in reference]
        if missing:
            raise FFNLabError(f"{how} ablation needs reference activations for {missing[0]}")

    def editor(name: str) -> Edit:
        def edit(act: Tensor) -> Tensor:
            act = act.clone()
            if how == "zero":
                act[..., idx] = 0
            elif how == "mean":
                ref = reference[name]
                mean = ref.reshape(-1, ref.shape[-1]).float().mean(0)
                act[..., idx] = mean[idx].to(act.dtype)
            else:
                ref = reference[name]
                if ref.shape[1] < act.shape[1]:
                    raise FFNLabError(f"resample reference for {name} has {ref.shape[1]} positions, "
                                      f"the input {act.shape[1]}")
                pick = torch.randint(ref.shape[0], (act.shape[0],), generator=generator)
                act[..., idx] = ref[pick, : act.shape[1]].to(act.dtype)[..., idx]
            return act
        return edit

    with hooks(model, {name: editor(name) for name in names}):
        yield


@contextmanager
def scale(model: Hooked, name: str, neurons: Sequence[int] | Tensor | None, factor: float) -> Iterator[None]:
    """Multiply chosen neurons (last dim) of one activation by `factor` (0 suppresses, 2 amplifies)."""
    idx = _select(neurons)

    def edit(act: Tensor) -> Tensor:
        act = act.clone()
        act[..., idx] = act[..., idx] * factor
        return act

    with hooks(model, {name: edit}):
        yield


@contextmanager
def patch(model: Hooked, recorded: Mapping[str, Tensor],
          positions: Sequence[int] | Tensor | None = None) -> Iterator[None]:
    """Replace activations by ones recorded from another input (activation patching).

    `recorded[name]` must have the activation's shape; with `positions`, only those
    positions (dim 1) are patched.
    """
    pos = _select(positions)

    def editor(name: str) -> Edit:
        source = recorded[name]

        def edit(act: Tensor) -> Tensor:
            if source.shape != act.shape:
                raise FFNLabError(f"patch for {name} has shape {tuple(source.shape)}, "
                                  f"the activation {tuple(act.shape)}")
            act = act.clone()
            act[:, pos] = source[:, pos].to(act.dtype)
            return act
        return edit

    with hooks(model, {name: editor(name) for name in recorded}):
        yield
