"""GPT-2 adapter: pre-LayerNorm blocks with a GELU MLP (Conv1D projections, (in, out) weights).

    mid = x + attn(ln_1(x));   out = mid + c_proj(gelu(c_fc(ln_2(mid))))
"""

from __future__ import annotations

from torch import Tensor, nn

from ffnlab.model.hooks import HookSite
from ffnlab.pretrained.base import PretrainedModel
from ffnlab.pretrained.sites import StreamSumSite


class GPT2Adapter(PretrainedModel):
    """`GPT2LMHeadModel` (or a headless `GPT2Model`) under ffnlab's hook names."""

    architecture = "gpt2"

    @property
    def body(self) -> nn.Module:
        return getattr(self.hf, "transformer", self.hf)

    @property
    def has_head(self) -> bool:
        return hasattr(self.hf, "lm_head")

    def layers(self) -> list[nn.Module]:
        return list(self.body.h)

    def global_sites(self) -> dict[str, HookSite]:
        return {"hook_embed": HookSite(self.body.drop), "hook_final": HookSite(self.body.ln_f)}

    def layer_sites(self, i: int, layer: nn.Module) -> dict[str, HookSite]:
        attn, mlp = layer.attn, layer.mlp
        return {
            "hook_resid_pre": HookSite(layer, "input"),
            "attn.hook_pattern": self.pattern_site(attn),
            "attn.hook_z": HookSite(attn.c_proj, "input"),
            "attn.hook_out": HookSite(attn, "output", 0),
            "hook_resid_mid": StreamSumSite(attn, "output", 0, stream=layer.ln_1),
            "ffn.hook_in": HookSite(mlp, "input"),
            "ffn.hook_pre": HookSite(mlp.c_fc),
            "ffn.hook_post": HookSite(mlp.c_proj, "input"),
            "ffn.hook_out": HookSite(mlp),
            "hook_resid_post": HookSite(layer),
        }

    def ffn_weights(self, layer: int) -> dict[str, Tensor]:
        mlp = self.body.h[layer].mlp  # Conv1D stores (in, out): transpose to (out, in)
        return {"in": mlp.c_fc.weight.T, "down": mlp.c_proj.weight.T,
                "in_bias": mlp.c_fc.bias, "down_bias": mlp.c_proj.bias}

    def _logits(self, tokens: Tensor, attention_mask: Tensor | None) -> Tensor:
        out = self.hf(input_ids=tokens, attention_mask=attention_mask, use_cache=False)
        return out.logits if self.has_head else out.last_hidden_state

    def unembed(self, resid: Tensor) -> Tensor:
        if not self.has_head:
            return super().unembed(resid)
        return self.hf.lm_head(self.body.ln_f(resid))

    def param_component(self, name: str) -> str:
        name = name.removeprefix("hf.").removeprefix("transformer.")
        if name.startswith(("wte.", "wpe.")):
            return "embeddings"
        if ".mlp." in name:
            return "ffn"
        if ".attn." in name:
            return "attention"
        if name.startswith("lm_head."):
            return "head"
        return "norms"
