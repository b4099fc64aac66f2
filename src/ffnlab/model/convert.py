"""State-dict adapters: Hugging Face GPT-2 and BERT checkpoints into ffnlab's Transformer.

One function per external format (as torchtitan does), mapping names and layouts only;
no model code is copied. GPT-2 stores its projections as Conv1D (in, out): transposed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ffnlab.model.config import FFNConfig, ModelConfig
from ffnlab.model.transformer import Transformer

_GPT2_ACT = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def gpt2_config(hf: Any) -> ModelConfig:
    """ModelConfig equal to a `transformers.GPT2Config`."""
    return ModelConfig(arch="decoder", vocab_size=hf.vocab_size, d_model=hf.n_embd, n_layers=hf.n_layer,
                       n_heads=hf.n_head, max_seq_len=hf.n_positions, norm_eps=hf.layer_norm_epsilon,
                       ffn=FFNConfig(kind="mlp", activation=_GPT2_ACT[hf.activation_function],
                                     d_ff=hf.n_inner or 4 * hf.n_embd))


def bert_config(hf: Any, lm_head: bool = True, pooler: bool = False) -> ModelConfig:
    """ModelConfig equal to a `transformers.BertConfig` (MLM head and/or pooler as asked)."""
    return ModelConfig(arch="encoder", vocab_size=hf.vocab_size, d_model=hf.hidden_size,
                       n_layers=hf.num_hidden_layers, n_heads=hf.num_attention_heads,
                       max_seq_len=hf.max_position_embeddings, norm_position="post", norm_eps=hf.layer_norm_eps,
                       final_norm=False, embed_norm=True, type_vocab_size=hf.type_vocab_size,
                       pooler=pooler, lm_head=lm_head,
                       ffn=FFNConfig(kind="mlp", activation=_GPT2_ACT[hf.hidden_act], d_ff=hf.intermediate_size))


def _strip(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def gpt2_state_dict(sd: Mapping[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """ffnlab names from a GPT2Model / GPT2LMHeadModel state dict."""
    sd = _strip(sd, "transformer.")
    out = {"tok.weight": sd["wte.weight"], "pos.weight": sd["wpe.weight"],
           "final_norm.weight": sd["ln_f.weight"], "final_norm.bias": sd["ln_f.bias"]}
    names = {"ln_1": "ln1", "ln_2": "ln2", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
             "mlp.c_fc": "ffn.fc_in", "mlp.c_proj": "ffn.fc_out"}
    for i in range(n_layers):
        for theirs, ours in names.items():
            w, b = sd[f"h.{i}.{theirs}.weight"], sd[f"h.{i}.{theirs}.bias"]
            out[f"blocks.{i}.{ours}.weight"] = w if theirs.startswith("ln") else w.T
            out[f"blocks.{i}.{ours}.bias"] = b
    return out


def bert_state_dict(sd: Mapping[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """ffnlab names from a BertModel / BertForMaskedLM state dict."""
    sd = _strip(sd, "bert.")
    e = "embeddings."
    out = {"tok.weight": sd[e + "word_embeddings.weight"], "pos.weight": sd[e + "position_embeddings.weight"],
           "types.weight": sd[e + "token_type_embeddings.weight"],
           "embed_norm.weight": sd[e + "LayerNorm.weight"], "embed_norm.bias": sd[e + "LayerNorm.bias"]}
    for i in range(n_layers):
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[q + "attn.qkv." + kind] = torch.cat([sd[f"{p}attention.self.{n}.{kind}"]
                                                     for n in ("query", "key", "value")])
            out[q + "attn.proj." + kind] = sd[p + "attention.output.dense." + kind]
            out[q + "ln1." + kind] = sd[p + "attention.output.LayerNorm." + kind]
            out[q + "ffn.fc_in." + kind] = sd[p + "intermediate.dense." + kind]
            out[q + "ffn.fc_out." + kind] = sd[p + "output.dense." + kind]
            out[q + "ln2." + kind] = sd[p + "output.LayerNorm." + kind]
    if "pooler.dense.weight" in sd:
        out["pooler.weight"], out["pooler.bias"] = sd["pooler.dense.weight"], sd["pooler.dense.bias"]
    t = "cls.predictions."
    if t + "transform.dense.weight" in sd:
        out.update({"mlm_transform.0.weight": sd[t + "transform.dense.weight"],
                    "mlm_transform.0.bias": sd[t + "transform.dense.bias"],
                    "mlm_transform.2.weight": sd[t + "transform.LayerNorm.weight"],
                    "mlm_transform.2.bias": sd[t + "transform.LayerNorm.bias"],
                    "head.weight": sd.get(t + "decoder.weight", out["tok.weight"]),
                    "head.bias": sd[t + "bias"]})
    return out


def load_hf(model: Transformer, ours: dict[str, Tensor]) -> Transformer:
    """Load converted weights strictly (every parameter of `model` must be given)."""
    missing, unexpected = model.load_state_dict(ours, strict=False)
    tied = {"head.weight"} if model.config.tie_embeddings else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"weight mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
