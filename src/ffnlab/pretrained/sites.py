"""Hook sites on Hugging Face modules for the activations their code never names.

Most of ffnlab's hook names map to the output or the first input of one HF module
(`HookSite`). Two do not:

- the pre-norm stream after attention (`hook_resid_mid` in Llama and GPT-2): the block adds
  attention's output to its input inside `forward`, and only the *normalised* sum is passed
  on to a module. `StreamSumSite` forms the same sum from the block's input and attention's
  output, and turns a replacement of the sum into a replacement of attention's output, so
  that editing it changes the stream the next layers see, as in ffnlab's own blocks.
- attention probabilities (`attn.hook_pattern`): the fused SDPA kernel never materialises
  them. `PatternSite` switches the model to HF's eager attention while it is hooked (the
  same numbers up to float rounding) and reads the probabilities from the attention
  module's output. They are read-only: replacing them would not change attention's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ffnlab.errors import FFNLabError
from ffnlab.model.hooks import Edit, HookSite


class Handles:
    """Several hook handles (and an optional undo) removed as one."""

    def __init__(self, handles: list, on_remove=None):
        self._handles, self._on_remove = handles, on_remove

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._on_remove is not None:
            self._on_remove()
            self._on_remove = None


class EagerSwitch:
    """Use HF's eager attention while at least one pattern hook is registered.

    A count, not a saved flag per hook: `hooks()` removes handles in registration order, so
    per-hook "restore what was there" would restore the wrong value.
    """

    def __init__(self, config):
        self.config, self.count, self.saved = config, 0, None

    def acquire(self) -> None:
        if self.count == 0:
            self.saved = self.config._attn_implementation
            self.config._attn_implementation = "eager"
        self.count += 1

    def release(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.config._attn_implementation = self.saved


@dataclass(frozen=True)
class PatternSite(HookSite):
    """Attention probabilities (B, H, T, T): element `index` of the attention module's output."""

    switch: EagerSwitch | None = field(default=None, compare=False)

    def register(self, fn: Edit) -> Handles:
        def read(pattern: Tensor | None) -> None:
            if pattern is None:
                raise FFNLabError("this attention implementation returns no probabilities")
            if fn(pattern) is not None:
                raise FFNLabError("attn.hook_pattern is read-only on pretrained models; "
                                  "edit attn.hook_out or attn.hook_z instead")
        handle = HookSite(self.module, "output", self.index).register(read)
        self.switch.acquire()
        return Handles([handle], on_remove=self.switch.release)


@dataclass(frozen=True)
class StreamSumSite(HookSite):
    """`stream + module_output[index]`: a residual sum the block forms without a module.

    `stream` is the site of the stream being added to: the first input of the block's first
    norm (which sees the block input after every pre-hook on the block has run), or of
    attention itself where no norm comes first (OLMo 2).
    """

    stream: HookSite | None = field(default=None, compare=False)

    def register(self, fn: Edit) -> Handles:
        seen: list[Tensor] = []

        def keep(x: Tensor) -> None:
            seen[:] = [x]

        def add(out: Tensor) -> Tensor | None:
            base = seen.pop()
            new = fn(base + out)  # the same addition the block does, so reading is exact
            return None if new is None else new - base
        return Handles([self.stream.register(keep), HookSite(self.module, self.where, self.index).register(add)])


@dataclass(frozen=True)
class GateSite(HookSite):
    """The first half of a fused gate/up projection's output (B, T, F): Phi-3's gate."""

    def register(self, fn: Edit):
        def half(out: Tensor) -> Tensor | None:
            gate, up = out.chunk(2, dim=-1)  # the split the model's own forward makes
            new = fn(gate)
            return None if new is None else torch.cat([new.to(up.dtype), up], -1)
        return HookSite(self.module).register(half)


def site(root: nn.Module, spec: str) -> HookSite:
    """A spec site: `path` (output), `in:path` (first input) or `path[k]` (element k of the output)."""
    if spec.startswith("in:"):
        return HookSite(root.get_submodule(spec[3:]), "input")
    path, _, k = spec.partition("[")
    return HookSite(root.get_submodule(path), "output", int(k.rstrip("]")) if k else None)
