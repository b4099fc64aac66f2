"""Write a tiny HF decoder as a GGUF file with gguf's own writer (llama.cpp tensor names and a
byte-level BPE vocabulary of one printable character per token)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def write_gguf(hf, path: Path, arch: str = "qwen2", half: bool = True) -> Path:
    """`hf` (Llama-layout decoder) as GGUF `arch`: matrices in F16 when `half`, everything else F32.

    Gemma 3 stores its norms' weights as llama.cpp does, with the +1 of Gemma's RMSNorm folded in."""
    cfg = hf.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(path.stem)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    rope = cfg.rope_parameters
    w.add_rope_freq_base(rope["full_attention"]["rope_theta"] if "full_attention" in rope else rope["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    if arch == "gemma3":
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_sliding_window(cfg.sliding_window)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if half else gguf.LlamaFileType.ALL_F32)
    vocab = cfg.vocab_size
    w.add_tokenizer_model("gpt2")
    w.add_token_list([chr(33 + i) for i in range(vocab)])
    w.add_token_types([gguf.TokenType.NORMAL] * vocab)
    w.add_token_scores([0.0] * vocab)
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg.num_hidden_layers)
    for key, tensor in hf.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        value = tensor.float().numpy() + (1.0 if arch == "gemma3" and "norm.weight" in key else 0.0)
        w.add_tensor(names.get_name(key, try_suffixes=(".weight", ".bias")),
                     value.astype(np.float16) if half and value.ndim == 2 else value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
