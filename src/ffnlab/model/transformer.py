"""The Transformer the question is about: embeddings, L blocks of attention then FFN, a head.

    x = embed(tokens)                                   # (B, T, D)
    for block in blocks:                                # pre-LN:  mid = x + attn(ln1(x))
        x = block(x)                                    #          out = mid + ffn(ln2(mid))
    logits = head(final_norm(x))                        # (B, T, V)

Post-LN blocks (BERT) normalise after each sum instead. Switches remove the skip around
attention, the skip around the FFN, the FFN (kind "none") or the norms (norm "none").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_
from torch import Tensor, nn

from ffnlab.model.attention import Attention, rotary_tables
from ffnlab.model.config import FFNConfig, ModelConfig
from ffnlab.model.ffn import FFN, FFN_KINDS, SharedFFN, build_basic, init_weights, scaled_std
from ffnlab.model.hooks import HookPoint, HookSite, hook_point_sites


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.Identity()


def make_ffn(cfg: ModelConfig, layer: int, shared: dict[str, FFN]) -> FFN:
    """Build layer `layer`'s FFN; `shared` holds the one core that every `shared` layer uses."""
    f: FFNConfig = cfg.layer_ffn(layer)
    width = f.width(cfg.d_model)
    if f.kind == "shared":
        if "core" not in shared:
            shared["core"] = build_basic(f.inner, cfg.d_model, width, f.activation, f.bias, f.rank)
        return SharedFFN(cfg.d_model, width, shared["core"])
    if f.kind == "moe":
        return FFN_KINDS["moe"](cfg.d_model, width, inner=f.inner, activation=f.activation, bias=f.bias,
                                n_experts=f.n_experts, top_k=f.top_k,
                                capacity_factor=f.capacity_factor, aux_loss_coef=f.aux_loss_coef)
    return build_basic(f.kind, cfg.d_model, width, f.activation, f.bias, f.rank)


class Block(nn.Module):
    """Attention then FFN, each inside its (optional) skip connection."""

    def __init__(self, cfg: ModelConfig, ffn: FFN):
        super().__init__()
        self.pre_norm, self.attn_skip, self.ffn_skip = cfg.norm_position == "pre", cfg.attn_skip, cfg.ffn_skip
        self.ln1 = make_norm(cfg)
        self.attn = Attention(cfg)
        self.ln2 = make_norm(cfg) if ffn.kind != "none" or not self.pre_norm else nn.Identity()
        self.ffn = ffn
        self.drop = nn.Dropout(cfg.dropout)
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None,
                pad_mask: Tensor | None = None) -> Tensor:  # (B, T, D) -> (B, T, D)
        x = self.hook_resid_pre(x)
        if self.pre_norm:
            a = self.drop(self.attn(self.ln1(x), rotary, pad_mask))
            mid = self.hook_resid_mid(x + a if self.attn_skip else a)
            f = self.drop(self.ffn(self.ln2(mid)))
            return self.hook_resid_post(mid + f if self.ffn_skip else f)
        a = self.drop(self.attn(x, rotary, pad_mask))
        mid = self.hook_resid_mid(x + a if self.attn_skip else a)
        h = self.ln1(mid)
        f = self.drop(self.ffn(h))
        return self.ln2(self.hook_resid_post(h + f if self.ffn_skip else f))


class Transformer(nn.Module):
    """A decoder (causal LM) or an encoder (bidirectional, MLM head) per `ModelConfig.arch`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        d = cfg.d_model
        self.tok = nn.Embedding(cfg.vocab_size, d)
        self.pos = nn.Embedding(cfg.max_seq_len, d) if cfg.positions == "learned" else None
        self.types = nn.Embedding(cfg.type_vocab_size, d) if cfg.type_vocab_size else None
        self.embed_norm = make_norm(cfg) if cfg.embed_norm else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)
        self.hook_embed = HookPoint()
        if cfg.positions == "rotary":
            cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rotary_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        shared: dict[str, FFN] = {}
        self.blocks = nn.ModuleList(Block(cfg, make_ffn(cfg, i, shared)) for i in range(cfg.n_layers))
        self.shared_ffn = shared.get("core")  # registered once here, used by every `shared` layer
        self.final_norm = make_norm(cfg) if cfg.final_norm and cfg.norm_position == "pre" else nn.Identity()
        self.hook_final = HookPoint()
        self.pooler = nn.Linear(d, d) if cfg.pooler else None
        self.mlm_transform = None
        if cfg.lm_head and cfg.arch == "encoder":  # BERT's prediction head: dense, gelu, norm, decoder
            self.mlm_transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), make_norm(cfg))
        self.head = None
        if cfg.lm_head:
            self.head = nn.Linear(d, cfg.vocab_size, bias=cfg.arch == "encoder")
        self.reset_parameters()
        if self.head is not None and cfg.tie_embeddings:
            self.head.weight = self.tok.weight

    def reset_parameters(self, std: float = 0.02) -> None:
        init_weights(self, std)
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, std)
        out_std = scaled_std(self.config.n_layers, std)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, 0.0, out_std)
        for ffn in self.ffns():
            for name, p in ffn.named_parameters():
                if name.endswith(("fc_out.weight", "out_b.weight")):
                    nn.init.normal_(p, 0.0, out_std)

    # -- forward ---------------------------------------------------------------------------
    def embed(self, tokens: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """(B, T) token ids -> (B, T, D)."""
        t = tokens.shape[1]
        if t > self.config.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len={self.config.max_seq_len}")
        x = self.tok(tokens)
        if self.pos is not None:
            x = x + self.pos(torch.arange(t, device=tokens.device))
        if self.types is not None:
            x = x + self.types(torch.zeros_like(tokens) if token_type_ids is None else token_type_ids)
        return self.hook_embed(self.drop(self.embed_norm(x)))

    def hidden(self, tokens: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None) -> Tensor:
        """The final hidden states (B, T, D), after the final norm."""
        x = self.embed(tokens, token_type_ids)
        rotary = (self.rope_cos, self.rope_sin) if self.config.positions == "rotary" else None
        pad_mask = attention_mask.bool() if attention_mask is not None else None
        for block in self.blocks:
            x = block(x, rotary, pad_mask)
        return self.hook_final(self.final_norm(x))

    def forward(self, tokens: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        """(B, T) -> logits (B, T, V); the final hidden states when there is no head."""
        h = self.hidden(tokens, attention_mask, token_type_ids)
        return self.logits(h) if self.head is not None else h

    def logits(self, h: Tensor) -> Tensor:
        """Head on final hidden states (B, T, D) -> (B, T, V)."""
        if self.mlm_transform is not None:
            h = self.mlm_transform(h)
        return self.head(h)

    def pooled(self, h: Tensor) -> Tensor:
        """BERT's pooler: tanh(W h[:, 0])."""
        return torch.tanh(self.pooler(h[:, 0]))

    # -- what analyses need (the same on pretrained adapters) ------------------------------
    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def causal(self) -> bool:
        return self.config.causal

    @property
    def d_model(self) -> int:
        return self.config.d_model

    @property
    def head_weight(self) -> Tensor | None:
        """The unembedding matrix (V, D), tied or not."""
        return None if self.head is None else self.head.weight

    def hook_sites(self) -> dict[str, HookSite]:
        return hook_point_sites(self)

    def ffns(self) -> list[FFN]:
        return [block.ffn for block in self.blocks]

    def ffn_values(self, layer: int) -> Tensor:
        """Value vectors (F, D) of layer `layer`'s FFN."""
        return self.blocks[layer].ffn.values()

    def unembed(self, resid: Tensor) -> Tensor:
        """Logit lens: read a residual stream (B, T, D) through the final norm and the head."""
        if self.head is None:
            raise ValueError("this model has no head to unembed with")
        return self.logits(self.final_norm(resid))

    def aux_loss(self) -> Tensor | None:
        """Sum of the FFNs' auxiliary losses (MoE load balancing) from the last forward."""
        losses = [loss for ffn in self.ffns() if (loss := ffn.aux_loss()) is not None]
        return torch.stack(losses).sum() if losses else None

    def param_component(self, name: str) -> str:
        """Which component a parameter belongs to, for the accounting of claim C5."""
        if name.startswith(("tok.", "pos.", "types.")):
            return "embeddings"
        if name.startswith(("shared_ffn.",)) or ".ffn." in name:
            return "ffn"
        if ".attn." in name:
            return "attention"
        if name.startswith("pooler."):
            return "pooler"
        if name.startswith(("head.", "mlm_transform.0.")):
            return "head"
        return "norms"


def cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean token cross-entropy in nats; logits (B, T, V), targets (B, T)."""
    return F_.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                            ignore_index=ignore_index)
