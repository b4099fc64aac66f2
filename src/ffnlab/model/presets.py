"""Named model configs. `bert-base` and `gpt2-small` reproduce Hugging Face's defaults exactly."""

from __future__ import annotations

from typing import Any

from ffnlab.errors import unknown
from ffnlab.model.config import FFNConfig, ModelConfig

PRESETS: dict[str, ModelConfig] = {
    # For tests: seconds on a CPU.
    "tiny": ModelConfig(arch="decoder", vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=64,
                        ffn=FFNConfig(kind="mlp", activation="gelu", ratio=4.0)),
    # For CPU studies: about 10M parameters with an 8k vocabulary.
    "small": ModelConfig(arch="decoder", vocab_size=8192, d_model=320, n_layers=6, n_heads=5, max_seq_len=256,
                         ffn=FFNConfig(kind="mlp", activation="gelu", ratio=4.0)),
    # BertModel(BertConfig()): with the pooler, without the MLM head (lm_head=True adds it).
    "bert-base": ModelConfig(arch="encoder", vocab_size=30522, d_model=768, n_layers=12, n_heads=12,
                             max_seq_len=512, ffn=FFNConfig(kind="mlp", activation="gelu", d_ff=3072),
                             norm_position="post", norm_eps=1e-12, final_norm=False, embed_norm=True,
                             type_vocab_size=2, pooler=True, lm_head=False),
    # GPT2Model(GPT2Config()) with the tied LM head of GPT2LMHeadModel.
    "gpt2-small": ModelConfig(arch="decoder", vocab_size=50257, d_model=768, n_layers=12, n_heads=12,
                              max_seq_len=1024, ffn=FFNConfig(kind="mlp", activation="gelu_tanh", d_ff=3072),
                              norm_eps=1e-5),
}


def preset(name: str, **changes: Any) -> ModelConfig:
    """A preset, with top-level fields changed (`ffn=FFNConfig(...)`, `n_layers=4`, ...)."""
    if name not in PRESETS:
        raise unknown("preset", name, PRESETS)
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
