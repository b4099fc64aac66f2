"""What analyses may use of a model: ffnlab's own `Transformer` and pretrained adapters alike.

An analysis takes an `AnalysableModel` and touches nothing else: named hook sites (names from
`ffnlab.model.names`), the un-embedding (logit lens), the FFN value vectors, and the
parameter components of the accounting. Pretrained adapters add `ffn_weights(layer)`: the
FFN's projections as (out, in) matrices (`in` or `gate`/`up`, `down`) and their biases.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from ffnlab.model.hooks import HookSite


@runtime_checkable
class AnalysableModel(Protocol):
    n_layers: int  # blocks
    causal: bool  # whether attention is causal (tracing and next-token losses need it)
    d_model: int

    def __call__(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) -> logits (B, T, V), or final hidden states (B, T, D) without a head."""

    def hook_sites(self) -> dict[str, HookSite]: ...

    def unembed(self, resid: Tensor) -> Tensor:
        """A residual stream (B, T, D) read through the final norm and head -> (B, T, V)."""

    def ffn_values(self, layer: int) -> Tensor:
        """(F, D): what neuron i writes, per unit of its activation (`ffn.hook_post`)."""

    def param_component(self, name: str) -> str:
        """embeddings, attention, ffn, norms, pooler or head, for a name of `named_parameters()`."""

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...


@runtime_checkable
class PretrainedAnalysable(AnalysableModel, Protocol):
    """An adapted pretrained model: also the FFN's weights, and where it came from."""

    meta: dict

    def ffn_weights(self, layer: int) -> dict[str, Tensor | None]: ...
