"""BERT-family adapter (all-MiniLM-L6-v2): post-LayerNorm encoder blocks with a GELU MLP.

    mid = x + attention.output.dense(self_attn(x));  h = attention.output.LayerNorm(mid)
    post = h + output.dense(gelu(intermediate.dense(h)));  out = output.LayerNorm(post)

As in ffnlab's own post-LN blocks, `hook_resid_mid` and `hook_resid_post` are the sums
entering the two LayerNorms and `ffn.hook_in` is the normalised stream the FFN reads.
"""

from __future__ import annotations

from torch import Tensor, nn

from ffnlab.model.hooks import HookSite
from ffnlab.pretrained.base import PretrainedModel


class BertAdapter(PretrainedModel):
    """`BertModel` (no head: forward gives hidden states) or `BertForMaskedLM`."""

    architecture = "bert"
    pre_norm = False

    @property
    def body(self) -> nn.Module:
        return getattr(self.hf, "bert", self.hf)

    @property
    def has_head(self) -> bool:
        return hasattr(self.hf, "cls")

    @property
    def causal(self) -> bool:
        return False

    def layers(self) -> list[nn.Module]:
        return list(self.body.encoder.layer)

    def global_sites(self) -> dict[str, HookSite]:
        return {"hook_embed": HookSite(self.body.embeddings), "hook_final": HookSite(self.body.encoder.layer[-1])}

    def layer_sites(self, i: int, layer: nn.Module) -> dict[str, HookSite]:
        attn, out = layer.attention, layer.output
        return {
            "hook_resid_pre": HookSite(layer, "input"),
            "attn.hook_pattern": self.pattern_site(attn.self),
            "attn.hook_z": HookSite(attn.output.dense, "input"),
            "attn.hook_out": HookSite(attn.output.dense),
            "hook_resid_mid": HookSite(attn.output.LayerNorm, "input"),
            "ffn.hook_in": HookSite(layer.intermediate, "input"),
            "ffn.hook_pre": HookSite(layer.intermediate.dense),
            "ffn.hook_post": HookSite(out.dense, "input"),
            "ffn.hook_out": HookSite(out.dense),
            "hook_resid_post": HookSite(out.LayerNorm, "input"),
        }

    def ffn_weights(self, layer: int) -> dict[str, Tensor]:
        blk = self.body.encoder.layer[layer]
        return {"in": blk.intermediate.dense.weight, "down": blk.output.dense.weight,
                "in_bias": blk.intermediate.dense.bias, "down_bias": blk.output.dense.bias}

    def _logits(self, tokens: Tensor, attention_mask: Tensor | None) -> Tensor:
        out = self.hf(input_ids=tokens, attention_mask=attention_mask)
        return out.logits if self.has_head else out.last_hidden_state

    def unembed(self, resid: Tensor) -> Tensor:
        """The MLM head on a normalised stream (post-LN: `hook_final` or a block's output)."""
        if not self.has_head:
            return super().unembed(resid)
        return self.hf.cls(resid)

    def param_component(self, name: str) -> str:
        name = name.removeprefix("hf.").removeprefix("bert.")
        if "LayerNorm" in name:
            return "norms"
        if name.startswith("embeddings."):
            return "embeddings"
        if ".intermediate." in name or (".output.dense" in name and ".attention." not in name):
            return "ffn"
        if ".attention." in name:
            return "attention"
        if name.startswith("pooler."):
            return "pooler"
        if name.startswith("cls."):
            return "head"
        return "norms"
