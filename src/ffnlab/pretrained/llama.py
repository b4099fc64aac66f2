"""Llama-family adapter (SmolLM2): pre-RMSNorm blocks with a SwiGLU FFN.

    mid  = x + o_proj(attn(input_layernorm(x)))
    out  = mid + down_proj(silu(gate_proj(h)) * up_proj(h)),  h = post_attention_layernorm(mid)
"""

from __future__ import annotations

from torch import Tensor, nn

from ffnlab.model.hooks import HookSite
from ffnlab.pretrained.base import PretrainedModel
from ffnlab.pretrained.sites import StreamSumSite


class LlamaAdapter(PretrainedModel):
    """`LlamaForCausalLM` under ffnlab's hook names."""

    architecture = "llama"

    def layers(self) -> list[nn.Module]:
        return list(self.hf.model.layers)

    def global_sites(self) -> dict[str, HookSite]:
        return {"hook_embed": HookSite(self.hf.model.embed_tokens),
                "hook_final": HookSite(self.hf.model.norm)}

    def layer_sites(self, i: int, layer: nn.Module) -> dict[str, HookSite]:
        attn, mlp = layer.self_attn, layer.mlp
        return {
            "hook_resid_pre": HookSite(layer, "input"),
            "attn.hook_pattern": self.pattern_site(attn),
            "attn.hook_z": HookSite(attn.o_proj, "input"),
            "attn.hook_out": HookSite(attn.o_proj),
            "hook_resid_mid": StreamSumSite(attn, "output", 0, stream=layer.input_layernorm),
            "ffn.hook_in": HookSite(mlp, "input"),
            "ffn.hook_pre": HookSite(mlp.gate_proj),
            "ffn.hook_post": HookSite(mlp.down_proj, "input"),
            "ffn.hook_out": HookSite(mlp),
            "hook_resid_post": HookSite(layer),
        }

    def ffn_weights(self, layer: int) -> dict[str, Tensor]:
        mlp = self.hf.model.layers[layer].mlp
        return {"gate": mlp.gate_proj.weight, "up": mlp.up_proj.weight, "down": mlp.down_proj.weight,
                "gate_bias": mlp.gate_proj.bias, "up_bias": mlp.up_proj.bias, "down_bias": mlp.down_proj.bias}

    def _logits(self, tokens: Tensor, attention_mask: Tensor | None) -> Tensor:
        return self.hf(input_ids=tokens, attention_mask=attention_mask, use_cache=False).logits

    def unembed(self, resid: Tensor) -> Tensor:
        return self.hf.lm_head(self.hf.model.norm(resid))

    def param_component(self, name: str) -> str:
        name = name.removeprefix("hf.")
        if "embed_tokens" in name:
            return "embeddings"
        if ".mlp." in name:
            return "ffn"
        if ".self_attn." in name:
            return "attention"
        if name.startswith("lm_head."):
            return "head"
        return "norms"
