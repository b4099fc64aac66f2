"""Small randomly initialised HF models of every supported architecture, built from their
transformers configs (nothing downloaded): 3 layers, d=32, FFN 64, 4 heads, vocabulary 97."""

from __future__ import annotations

import torch
import transformers as tf
from transformers.utils import logging as hf_logging

from ffnlab.pretrained import PretrainedModel, load
from ffnlab.pretrained.families import supported_types
from ffnlab.pretrained.load import hf_class

hf_logging.set_verbosity_error()
V, D, F, L, H = 97, 32, 64, 3, 4
IDS = dict(vocab_size=V, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tiny_config(model_type: str, **extra) -> tf.PretrainedConfig:
    """A tiny config of `model_type` in the size names its config class takes."""
    if model_type in ("gpt2", "gptj"):
        kw = dict(n_embd=D, n_inner=F, n_layer=L, n_head=H, n_positions=64)
        if model_type == "gptj":
            kw["rotary_dim"] = 4
    elif model_type == "distilbert":
        kw = dict(dim=D, hidden_dim=F, n_layers=L, n_heads=H, max_position_embeddings=64)
    else:
        kw = dict(hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H,
                  max_position_embeddings=64)
        if model_type not in ("bert", "roberta", "xlm-roberta", "gpt_neox"):
            kw.update(num_key_value_heads=2, head_dim=D // H)  # grouped-query attention
    return tf.AutoConfig.for_model(model_type, **{**IDS, **kw, **extra})


def tiny_hf(kind: str, **extra) -> torch.nn.Module:
    """`kind`: a model_type (with its head), `<type>-headless` (encoders without an MLM head)."""
    torch.manual_seed(0)
    model_type = kind.removesuffix("-headless")
    cls = hf_class(model_type, [] if kind.endswith("-headless") else None)
    return cls(tiny_config(model_type, **extra)).eval()


def tiny(kind: str) -> PretrainedModel:
    return PretrainedModel(tiny_hf(kind), None, {"name": f"tiny-{kind}"})


KINDS = (*supported_types(), "bert-headless")


def saved_and_loaded(kind: str, root) -> tuple[PretrainedModel, torch.nn.Module]:
    """`kind`'s tiny model written with save_pretrained (safetensors), loaded back through `load`."""
    hf = tiny_hf(kind)
    hf.save_pretrained(root / kind)
    return load(root / kind, progress=False), hf


def tokens(b: int = 2, t: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, V, (b, t), generator=torch.Generator().manual_seed(seed))
