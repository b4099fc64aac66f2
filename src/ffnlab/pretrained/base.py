"""A Hugging Face model seen through ffnlab's hook names, driven by its family's spec.

The adapter wraps one HF model (never copying or changing its code or weights) and reads
from its `Family` (`ffnlab.pretrained.families`) where each named activation lives, so that
every analysis that runs on ffnlab's own `Transformer` runs unchanged on it:

    hook_sites()       {name: HookSite} with the names of `ffnlab.model.hooks`
    n_layers, causal   depth; whether attention is causal
    forward(tokens, attention_mask=None) -> logits (B, T, V); encoders without a head: (B, T, D)
    unembed(resid)     final norm + head (+ logit soft-capping): the logit lens
    ffn_values(layer)  (F, D) value vectors; ffn_weights(layer) the FFN's projections
    param_component(name) for parameter accounting; tokenizer; meta (where it came from)

`verify()` (`ffnlab.pretrained.verify`) runs at load and refuses a model whose hooks do not
mean what they say.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ffnlab.errors import FFNLabError
from ffnlab.model.hooks import HookSite
from ffnlab.model.names import block_hook
from ffnlab.pretrained.families import Family, family_for
from ffnlab.pretrained.sites import EagerSwitch, GateSite, PatternSite, StreamSumSite, site

NORM_LIKE = "Norm"  # class names of norm modules (LayerNorm, RMSNorm, Gemma2RMSNorm, ...)


class PretrainedModel(nn.Module):
    """An HF model under ffnlab's hook names; `family` defaults to the one of `hf.config.model_type`."""

    def __init__(self, hf: nn.Module, tokenizer: Any = None, meta: dict | None = None,
                 family: Family | None = None):
        super().__init__()
        self.hf = hf.eval()
        self.family = family or family_for(hf.config)
        self.tokenizer = tokenizer
        self.meta = {"architecture": hf.config.model_type, "family": self.family.name,
                     "hf_class": type(hf).__name__, **(meta or {})}
        self._eager = EagerSwitch(hf.config)
        self._components: dict[str, str] | None = None

    # -- where things are ------------------------------------------------------------------
    @property
    def architecture(self) -> str:
        return self.hf.config.model_type

    @property
    def body(self) -> nn.Module:
        """The HF base model (the model itself when it has no head)."""
        return self.hf.base_model

    @property
    def has_head(self) -> bool:
        return self.body is not self.hf

    @property
    def pre_norm(self) -> bool:
        return self.family.block != "post-ln"

    @property
    def norm_position(self) -> str:
        return "pre" if self.pre_norm else "post"

    @property
    def block_form(self) -> str:
        return self.family.block

    def layers(self) -> list[nn.Module]:
        return list(self.body.get_submodule(self.family.layers))

    def part(self, layer: int, path: str | None) -> nn.Module | None:
        """Module `path` of block `layer` (None for None)."""
        return None if path is None else self.layers()[layer].get_submodule(path)

    # -- hook sites ------------------------------------------------------------------------
    def hook_sites(self) -> dict[str, HookSite]:
        fam, layers = self.family, self.layers()
        final = site(self.body, fam.final) if fam.final else HookSite(layers[-1])
        sites = {"hook_embed": site(self.body, fam.embed), "hook_final": final}
        for i, layer in enumerate(layers):
            sites.update({block_hook(i, k): v for k, v in self.layer_sites(layer).items()})
        return sites

    def layer_sites(self, layer: nn.Module) -> dict[str, HookSite]:
        """Sites of one block, by name without the `blocks.{i}.` prefix."""
        fam = self.family
        attn_out = site(layer, fam.attn_out)
        ffn_in = layer.get_submodule(fam.ffn_in)
        if fam.resid_mid is not None:  # post-ln: the sum entering the norm
            mid = site(layer, fam.resid_mid)
        else:  # pre-norm: the block forms the sum without a module
            stream = HookSite(layer.get_submodule(fam.attn_norm or fam.attn), "input")
            mid = StreamSumSite(attn_out.module, attn_out.where, attn_out.index, stream=stream)
        return {
            "hook_resid_pre": HookSite(layer, "input"),
            "attn.hook_pattern": PatternSite(layer.get_submodule(fam.pattern or fam.attn), "output", 1,
                                             switch=self._eager),
            "attn.hook_z": HookSite(layer.get_submodule(fam.attn_z), "input"),
            "attn.hook_out": attn_out,
            "hook_resid_mid": mid,
            "ffn.hook_in": HookSite(layer.get_submodule(fam.ffn), "input"),
            "ffn.hook_pre": GateSite(ffn_in) if fam.fused_gate_up else HookSite(ffn_in),
            "ffn.hook_post": HookSite(layer.get_submodule(fam.ffn_down), "input"),
            "ffn.hook_out": site(layer, fam.ffn_out),
            "hook_resid_post": site(layer, fam.resid_post) if fam.resid_post else HookSite(layer),
        }

    # -- the contract ----------------------------------------------------------------------
    @property
    def config(self):
        return self.hf.config

    @property
    def n_layers(self) -> int:
        return len(self.layers())

    @property
    def causal(self) -> bool:
        return self.family.causal

    @property
    def d_model(self) -> int:
        return self.ffn_weights(0)["down"].shape[0]

    @property
    def d_ff(self) -> int:
        return self.ffn_weights(0)["down"].shape[1]

    @property
    def d_attn(self) -> int:
        """Heads x head dimension: the width attention's scores and value mix run over (not d_model in
        Gemma or with other head sizes); the input width of the output projection."""
        z = self.part(0, self.family.attn_z).weight
        return z.shape[0] if self.family.conv1d else z.shape[1]

    def attention_windows(self) -> list[int | None]:
        """Per block, how many keys a query sees at most (a sliding window) or None (every earlier one)."""
        cfg = self.hf.config
        window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        kinds = getattr(cfg, "layer_types", None) or ["sliding_attention" if window else "full_attention"] * self.n_layers
        return [window if kind == "sliding_attention" and window else None for kind in kinds]

    @property
    def vocab_size(self) -> int:
        return self.hf.config.vocab_size

    def forward(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) token ids -> logits (B, T, V), or final hidden states (B, T, D) without a head."""
        if tokens.dim() != 2:
            raise FFNLabError(f"tokens must be (B, T), got shape {tuple(tokens.shape)}")
        extra = {"use_cache": False} if self.causal else {}
        out = self.hf(input_ids=tokens.long(), attention_mask=attention_mask, **extra)
        return out.logits if self.has_head else out.last_hidden_state

    def unembed(self, resid: Tensor) -> Tensor:
        """Logits of a residual stream (B, T, D): final norm (pre-norm models), head, soft-capping.

        Post-LN models read a normalised stream (`hook_final` or a block's output) directly.
        """
        if not self.has_head:
            raise FFNLabError(f"{self.meta.get('name', self.architecture)} has no head to unembed with")
        x = resid
        if self.family.final_norm is not None:
            x = self.body.get_submodule(self.family.final_norm)(x)
        for path in self.family.head:
            x = self.hf.get_submodule(path)(x)
        cap = getattr(self.hf.config, "final_logit_softcapping", None)
        return x if cap is None else torch.tanh(x / cap) * cap  # Gemma 2's soft-capping, as its forward does

    def ffn_weights(self, layer: int) -> dict[str, Tensor | None]:
        """The FFN's projections as (out, in) matrices, and their biases: in (or gate, up), down."""
        fam = self.family
        first, down = self.part(layer, fam.ffn_in), self.part(layer, fam.ffn_down)

        def w(m: nn.Module) -> Tensor:
            return m.weight.T if fam.conv1d else m.weight  # Conv1D stores (in, out)
        if fam.fused_gate_up:
            gate, up = w(first).chunk(2, 0)
            gb, ub = first.bias.chunk(2) if first.bias is not None else (None, None)
            out = {"gate": gate, "up": up, "gate_bias": gb, "up_bias": ub}
        elif fam.ffn_up is not None:
            up_mod = self.part(layer, fam.ffn_up)
            out = {"gate": w(first), "up": w(up_mod), "gate_bias": first.bias, "up_bias": up_mod.bias}
        else:
            out = {"in": w(first), "in_bias": first.bias}
        return {**out, "down": w(down), "down_bias": down.bias}

    def ffn_act(self, layer: int) -> nn.Module:
        return self.part(layer, self.family.ffn_act)

    def ffn_values(self, layer: int) -> Tensor:
        """Value vectors (F, D): neuron i adds hook_post[i] * ffn_values(layer)[i] to the down projection's
        output (to the stream itself unless the family has a norm after the FFN)."""
        return self.ffn_weights(layer)["down"].T

    def aux_loss(self) -> Tensor | None:
        return None

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def head_weight(self) -> Tensor | None:
        """The (V, D) unembedding matrix (shared with the embedding when tied), for FLOP counts."""
        head = self.hf.get_output_embeddings() if self.has_head else None
        return None if head is None else head.weight

    # -- accounting ------------------------------------------------------------------------
    def param_component(self, name: str) -> str:
        """embeddings, attention, ffn, norms, pooler or head, by which module of the spec owns it."""
        if self._components is None:
            self._components = self._component_map()
        key = name.removeprefix("hf.")
        if key not in self._components:
            raise FFNLabError(f"{name} is not a parameter of {self.meta.get('name', self.architecture)}")
        return self._components[key]

    def _component_map(self) -> dict[str, str]:
        fam = self.family
        owner: dict[int, str] = {}  # id(module) -> component, innermost assignment wins
        for m in self.hf.modules():
            if NORM_LIKE in type(m).__name__:
                owner[id(m)] = "norms"
        for layer in self.layers():
            for path, comp in ((fam.attn, "attention"), (fam.ffn, "ffn"), (fam.ffn_down, "ffn"),
                               (fam.ffn_in, "ffn")):
                for m in layer.get_submodule(path).modules():
                    owner.setdefault(id(m), comp)
        for path in fam.head if self.has_head else ():
            for m in self.hf.get_submodule(path).modules():
                owner[id(m)] = "head"
        if hasattr(self.body, "pooler") and self.body.pooler is not None:
            for m in self.body.pooler.modules():
                owner[id(m)] = "pooler"
        layer_ids = {id(m) for layer in self.layers() for m in layer.modules()}
        tied = self.hf.get_input_embeddings().weight  # a tied head is listed under either name: it is the embedding
        out = {}
        for mod_name, m in self.hf.named_modules(remove_duplicate=False):
            for p_name, p in m.named_parameters(recurse=False):
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                default = "norms" if id(m) in layer_ids else "embeddings"  # the rest of a block; embeddings
                out[full] = "embeddings" if p is tied else owner.get(id(m), default)
        return out

    # -- checks at load --------------------------------------------------------------------
    def verify(self, tokens: Tensor | None = None) -> dict[str, float]:
        """Check on a sample that the hooks mean what they say; FFNLabError if they do not."""
        from ffnlab.pretrained.verify import verify

        return verify(self, tokens)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _device(self) -> torch.device:
        return next(self.parameters()).device
