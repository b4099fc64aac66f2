"""The adapter contract: a Hugging Face model seen through ffnlab's hook names.

An adapter wraps one HF model (never copying or changing its code or weights) and says
where each named activation lives, so that every analysis that runs on ffnlab's own
`Transformer` runs unchanged on it:

    hook_sites()       {name: HookSite} with the names of `ffnlab.model.hooks`
    n_layers, causal   depth; whether attention is causal
    forward(tokens, attention_mask=None) -> logits (B, T, V); encoders without a head: (B, T, D)
    unembed(resid)     final norm + head (logit lens)
    ffn_values(layer)  (F, D) value vectors; ffn_weights(layer) the FFN's projections
    param_component(name) for parameter accounting; tokenizer; meta (where it came from)

`verify()` runs at load and refuses a model whose hooks do not mean what they say.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from ffnlab.errors import FFNLabError
from ffnlab.model.hooks import HookSite, capture
from ffnlab.pretrained.sites import EagerSwitch, PatternSite


class PretrainedModel(nn.Module, ABC):
    """Base adapter: subclasses map one HF architecture onto ffnlab's hook names."""

    architecture = "?"
    pre_norm = True  # False for post-LN blocks (BERT)

    def __init__(self, hf: nn.Module, tokenizer: Any = None, meta: dict | None = None):
        super().__init__()
        self.hf = hf.eval()
        self.tokenizer = tokenizer
        self.meta = {"architecture": self.architecture, "hf_class": type(hf).__name__, **(meta or {})}
        self._eager = EagerSwitch(hf.config)

    # -- what subclasses define ------------------------------------------------------------
    @abstractmethod
    def layers(self) -> list[nn.Module]:
        """The HF transformer blocks, in order."""

    @abstractmethod
    def layer_sites(self, i: int, layer: nn.Module) -> dict[str, HookSite]:
        """Sites of block i, by name without the `blocks.{i}.` prefix."""

    @abstractmethod
    def global_sites(self) -> dict[str, HookSite]:
        """`hook_embed` and `hook_final`."""

    @abstractmethod
    def ffn_weights(self, layer: int) -> dict[str, Tensor]:
        """The FFN's projections as (out, in) matrices and their biases: in or gate/up, down."""

    def unembed(self, resid: Tensor) -> Tensor:
        raise FFNLabError(f"{self.meta.get('name', self.architecture)} has no head to unembed with")

    @abstractmethod
    def _logits(self, tokens: Tensor, attention_mask: Tensor | None) -> Tensor:
        """The HF model's output for `tokens`: logits (B, T, V), or hidden states without a head."""

    @abstractmethod
    def param_component(self, name: str) -> str:
        """Which accounting component a parameter belongs to."""

    # -- the contract ----------------------------------------------------------------------
    @property
    def config(self):
        return self.hf.config

    @property
    def n_layers(self) -> int:
        return len(self.layers())

    @property
    def causal(self) -> bool:
        return True

    @property
    def d_model(self) -> int:
        return self.hf.config.hidden_size

    @property
    def d_ff(self) -> int:
        return self.ffn_weights(0)["down"].shape[1]

    @property
    def vocab_size(self) -> int:
        return self.hf.config.vocab_size

    def hook_sites(self) -> dict[str, HookSite]:
        sites = dict(self.global_sites())
        for i, layer in enumerate(self.layers()):
            sites.update({f"blocks.{i}.{k}": v for k, v in self.layer_sites(i, layer).items()})
        return sites

    def pattern_site(self, attention: nn.Module) -> PatternSite:
        return PatternSite(attention, "output", 1, switch=self._eager)

    def forward(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) token ids -> logits (B, T, V), or final hidden states (B, T, D) without a head."""
        if tokens.dim() != 2:
            raise FFNLabError(f"tokens must be (B, T), got shape {tuple(tokens.shape)}")
        return self._logits(tokens.long(), attention_mask)

    def ffn_values(self, layer: int) -> Tensor:
        """Value vectors (F, D): neuron i adds hook_post[i] * ffn_values(layer)[i] to the stream."""
        return self.ffn_weights(layer)["down"].T

    def aux_loss(self) -> Tensor | None:
        return None

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- checks at load --------------------------------------------------------------------
    def verify(self, tokens: Tensor | None = None) -> dict[str, float]:
        """Check on a sample that the hooks mean what they say; FFNLabError if they do not.

        resid_mid = resid_pre + attn_out; resid_post = resid_mid + ffn_out (pre-LN) or
        ffn_in + ffn_out (post-LN); ffn_out = down(ffn_post); resid_pre of block i+1 =
        resid_post of block i (pre-LN); logits unchanged by capture hooks; unembed of the
        last stream = logits (models with a head); attention rows sum to 1. Returns the
        largest relative error of each identity.
        """
        if tokens is None:
            g = torch.Generator().manual_seed(0)
            tokens = torch.randint(0, self.vocab_size, (2, 12), generator=g).to(self._device())
        tol = 1e-4 if self._dtype() == torch.float32 else 3e-2
        names = [n for n in self.hook_sites() if not n.endswith("hook_pattern")]
        with torch.no_grad():
            plain = self(tokens)
            with capture(self, names, device=None) as c:
                hooked = self(tokens)
            with capture(self, ["blocks.0.attn.hook_pattern"]) as p:  # eager attention: its own forward
                self(tokens)
            errors = {"logits with hooks": _rel(hooked, plain)}
            for i in range(self.n_layers):
                b = f"blocks.{i}."
                _worst(errors, "resid_mid = resid_pre + attn_out",
                       _rel(c[b + "hook_resid_mid"], c[b + "hook_resid_pre"] + c[b + "attn.hook_out"]))
                base = c[b + "hook_resid_mid"] if self.pre_norm else c[b + "ffn.hook_in"]
                _worst(errors, "resid_post = stream + ffn_out",
                       _rel(c[b + "hook_resid_post"], base + c[b + "ffn.hook_out"]))
                w = self.ffn_weights(i)
                down = c[b + "ffn.hook_post"] @ w["down"].T.to(plain.dtype)
                if w.get("down_bias") is not None:
                    down = down + w["down_bias"].to(plain.dtype)
                _worst(errors, "ffn_out = down(ffn_post)", _rel(c[b + "ffn.hook_out"], down))
                if self.pre_norm and i + 1 < self.n_layers:
                    _worst(errors, "resid_pre[i+1] = resid_post[i]",
                           _rel(c[f"blocks.{i + 1}.hook_resid_pre"], c[b + "hook_resid_post"]))
            pattern = p["blocks.0.attn.hook_pattern"].float()
            errors["pattern rows sum to 1"] = (pattern.sum(-1) - 1).abs().max().item()
            if self.causal:
                errors["pattern is causal"] = pattern.triu(1).abs().max().item()
            if self.has_head:
                last = c[f"blocks.{self.n_layers - 1}.hook_resid_post"] if self.pre_norm else c["hook_final"]
                errors["unembed(last stream) = logits"] = _rel(self.unembed(last), plain)
        bad = {k: v for k, v in errors.items() if not v <= tol}
        if bad:
            k, v = next(iter(bad.items()))
            raise FFNLabError(f"{self.meta.get('name', self.architecture)}: hook check failed: {k} "
                              f"(relative error {v:.2g} > {tol:g}); this checkpoint is not supported")
        return errors

    @property
    def has_head(self) -> bool:
        return True

    @property
    def head_weight(self) -> Tensor | None:
        """The (V, D) unembedding matrix (shared with the embedding when tied), for FLOP counts."""
        head = self.hf.get_output_embeddings() if self.has_head else None
        return None if head is None else head.weight

    @property
    def norm_position(self) -> str:
        return "pre" if self.pre_norm else "post"

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def _rel(a: Tensor, b: Tensor) -> float:
    """max |a - b| relative to max |b| (at least 1)."""
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


def _worst(errors: dict[str, float], key: str, value: float) -> None:
    errors[key] = max(errors.get(key, 0.0), value)

