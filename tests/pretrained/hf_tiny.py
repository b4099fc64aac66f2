"""Small randomly initialised HF models of each supported architecture (nothing downloaded)."""

from __future__ import annotations

import torch
import transformers as tf
from transformers.utils import logging as hf_logging

from ffnlab.pretrained import ADAPTERS, PretrainedModel

hf_logging.set_verbosity_error()
V, D, F, L = 97, 32, 64, 3


def tiny_hf(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "bert":
        return tf.BertModel(tf.BertConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                          num_attention_heads=4, max_position_embeddings=64))
    if kind == "bert-mlm":
        return tf.BertForMaskedLM(tf.BertConfig(vocab_size=V, hidden_size=D, intermediate_size=F,
                                                num_hidden_layers=L, num_attention_heads=4,
                                                max_position_embeddings=64))
    if kind == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=V, n_embd=D, n_inner=F, n_layer=L, n_head=4,
                                                n_positions=64, bos_token_id=0, eos_token_id=0))
    if kind == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=F,
                                                  num_hidden_layers=L, num_attention_heads=4,
                                                  num_key_value_heads=2, max_position_embeddings=64,
                                                  tie_word_embeddings=True))
    raise ValueError(kind)


def tiny(kind: str) -> PretrainedModel:
    hf = tiny_hf(kind).eval()
    return ADAPTERS[hf.config.model_type](hf, None, {"name": f"tiny-{kind}"})


KINDS = ("bert", "bert-mlm", "gpt2", "llama")


def tokens(b: int = 2, t: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))
