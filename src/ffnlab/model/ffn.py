"""FFN variants behind one contract: `(B, T, D) -> (B, T, D)` with the same hook points.

Every variant exposes `hook_in`, `hook_pre` (B, T, F), `hook_post` (B, T, F, the neuron
activations) and `hook_out`, and the value vectors (`values()`: (F, D), the rows that
neuron activations multiply). Adding a variant is one class and one `@register` line;
the tests iterate `FFN_KINDS`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

from ffnlab.model.hooks import HookPoint

FFN_KINDS: dict[str, type[FFN]] = {}


def register(kind: str) -> Callable[[type[FFN]], type[FFN]]:
    def add(cls: type[FFN]) -> type[FFN]:
        FFN_KINDS[kind] = cls
        cls.kind = kind
        return cls
    return add


def relu2(x: Tensor) -> Tensor:
    """Squared ReLU (So et al. 2021, Primer)."""
    return F_.relu(x).square()


ACT_FNS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F_.relu,
    "gelu": F_.gelu,
    "gelu_tanh": lambda x: F_.gelu(x, approximate="tanh"),
    "silu": F_.silu,
    "relu2": relu2,
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
}


class FFN(nn.Module, ABC):
    """The contract: (B, T, D) -> (B, T, D), the four hook points, value vectors, an optional aux loss."""

    kind: str = "?"

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.d_model, self.d_ff = d_model, d_ff
        self.hook_in, self.hook_pre, self.hook_post, self.hook_out = (HookPoint() for _ in range(4))

    @abstractmethod
    def values(self) -> Tensor:
        """Value vectors (F, D): neuron i adds post[i] * values()[i] to the stream (plus a bias)."""

    def aux_loss(self) -> Tensor | None:
        """An auxiliary training loss from the last forward (MoE load balancing), else None."""
        return None


class DenseFFN(FFN):
    """`out = down(act(pre(x)))` with hook points around each step (every variant but MoE)."""

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        x = self.hook_in(x)
        pre = self.hook_pre(self.pre(x))  # (B, T, F)
        post = self.hook_post(self.act(pre, x))  # (B, T, F)
        return self.hook_out(self.down(post))

    @abstractmethod
    def pre(self, x: Tensor) -> Tensor:
        """(B, T, D) -> hidden pre-activation (B, T, F); the gate's for gated FFNs."""

    @abstractmethod
    def act(self, pre: Tensor, x: Tensor) -> Tensor:
        """Neuron activations (B, T, F) from the pre-activation (and the input, for gating)."""

    @abstractmethod
    def down(self, post: Tensor) -> Tensor:
        """(B, T, F) -> (B, T, D)."""


@register("none")
class NoFFN(DenseFFN):
    """No FFN: the block's FFN sub-layer adds nothing (F = 0)."""

    def __init__(self, d_model: int, d_ff: int = 0, **_: object):
        super().__init__(d_model, 0)

    def pre(self, x: Tensor) -> Tensor:
        return x.new_zeros(*x.shape[:-1], 0)

    def act(self, pre: Tensor, x: Tensor) -> Tensor:
        return pre

    def down(self, post: Tensor) -> Tensor:
        return post.new_zeros(*post.shape[:-1], self.d_model)

    def values(self) -> Tensor:
        return torch.zeros(0, self.d_model)


@register("mlp")
class MLP(DenseFFN):
    """`W_out act(W_in x)` (Vaswani et al. 2017) with relu, gelu, silu or relu2."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True):
        super().__init__(d_model, d_ff)
        self.activation = activation
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)
        self._act = ACT_FNS[activation]

    def pre(self, x: Tensor) -> Tensor:
        return self.fc_in(x)

    def act(self, pre: Tensor, x: Tensor) -> Tensor:
        return self._act(pre)

    def down(self, post: Tensor) -> Tensor:
        return self.fc_out(post)

    def values(self) -> Tensor:
        return self.fc_out.weight.T


@register("linear")
class LinearFFN(MLP):
    """The two projections of an MLP without the activation between them (claim C3)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "identity", bias: bool = True):
        super().__init__(d_model, d_ff, activation="identity", bias=bias)


class GatedFFN(DenseFFN):
    """`W_down (act(W_gate x) * W_up x)`: the gated family of Shazeer 2020."""

    gate_activation = "identity"

    def __init__(self, d_model: int, d_ff: int, activation: str = "", bias: bool = True):
        super().__init__(d_model, d_ff)
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)
        self._act = ACT_FNS[self.gate_activation]

    def pre(self, x: Tensor) -> Tensor:
        return self.gate(x)

    def act(self, pre: Tensor, x: Tensor) -> Tensor:
        return self._act(pre) * self.up(x)

    def down(self, post: Tensor) -> Tensor:
        return self.fc_out(post)

    def values(self) -> Tensor:
        return self.fc_out.weight.T


def _gated(kind: str, activation: str, doc: str) -> type[GatedFFN]:
    cls = type(kind.upper(), (GatedFFN,), {"gate_activation": activation, "__doc__": doc})
    return register(kind)(cls)


GLU = _gated("glu", "sigmoid", "GLU: sigmoid gate (Dauphin et al. 2017).")
Bilinear = _gated("bilinear", "identity", "Bilinear: no activation on the gate.")
ReGLU = _gated("reglu", "relu", "ReGLU: ReLU gate.")
GEGLU = _gated("geglu", "gelu", "GEGLU: GELU gate.")
SwiGLU = _gated("swiglu", "silu", "SwiGLU: SiLU (Swish) gate, as in Llama.")


@register("lowrank")
class LowRankFFN(DenseFFN):
    """An MLP whose two projections are each factorised through rank r: W = B A."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True,
                 rank: int | None = None):
        super().__init__(d_model, d_ff)
        self.rank = rank or max(1, min(d_model, d_ff) // 4)
        self.in_a = nn.Linear(d_model, self.rank, bias=False)
        self.in_b = nn.Linear(self.rank, d_ff, bias=bias)
        self.out_a = nn.Linear(d_ff, self.rank, bias=False)
        self.out_b = nn.Linear(self.rank, d_model, bias=bias)
        self._act = ACT_FNS[activation]

    def pre(self, x: Tensor) -> Tensor:
        return self.in_b(self.in_a(x))

    def act(self, pre: Tensor, x: Tensor) -> Tensor:
        return self._act(pre)

    def down(self, post: Tensor) -> Tensor:
        return self.out_b(self.out_a(post))

    def values(self) -> Tensor:
        return (self.out_b.weight @ self.out_a.weight).T


@register("shared")
class SharedFFN(DenseFFN):
    """One FFN whose weights every layer uses (Pires et al. 2023, "One Wide FFN").

    Each layer gets its own `SharedFFN` with its own hook points; the weights live in one
    `core` module owned by the model (held here without registering it twice).
    """

    def __init__(self, d_model: int, d_ff: int, core: DenseFFN):
        super().__init__(d_model, d_ff)
        self._core = (core,)  # a tuple, so that the core's parameters are counted once

    @property
    def core(self) -> DenseFFN:
        return self._core[0]

    def pre(self, x: Tensor) -> Tensor:
        return self.core.pre(x)

    def act(self, pre: Tensor, x: Tensor) -> Tensor:
        return self.core.act(pre, x)

    def down(self, post: Tensor) -> Tensor:
        return self.core.down(post)

    def values(self) -> Tensor:
        return self.core.values()


def build_basic(kind: str, d_model: int, d_ff: int, activation: str, bias: bool,
                rank: int | None = None) -> DenseFFN:
    """An FFN of a kind that needs nothing but its width (everything but shared and moe)."""
    cls = FFN_KINDS[kind]
    if kind == "lowrank":
        return cls(d_model, d_ff, activation=activation, bias=bias, rank=rank)
    if kind == "none":
        return cls(d_model)
    return cls(d_model, d_ff, activation=activation, bias=bias)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2 style initialisation: N(0, std) weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def scaled_std(n_layers: int, std: float = 0.02) -> float:
    """GPT-2's 1/sqrt(2L) scaling of the residual-output projections."""
    return std / math.sqrt(2 * n_layers)


# MoE registers itself on import; keep it importable from here.
from ffnlab.model import moe as _moe  # noqa: E402,F401
