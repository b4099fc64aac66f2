"""Open a model for analysis, with its own tokenizer: an ffnlab run or a pretrained model.

    opened = open_model("results/runs/small-mlp-s0")   # the tokenizer saved in the run's checkpoint
    opened = open_model("smollm2")                     # the model's own tokenizer.json
    tokens = opened.tokens_of(None, 4096)              # (N,) tokens of the default corpus

Every command and experiment that reads text through a model opens it here, so a run trained
with `--data` or `--tokenizer char` is analysed with the token ids it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ffnlab.errors import FFNLabError
from ffnlab.model.contract import AnalysableModel


@dataclass
class Opened:
    """A model with the hook contract, and how to turn its text into tokens and back."""

    name: str
    model: AnalysableModel
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    vocab_size: int
    tokens_of: Callable[[str | None, int], Tensor]  # (corpus path, n tokens) -> (N,) validation tokens
    caveats: list[str] = field(default_factory=list)
    max_positions: int | None = None  # the longest window the model takes (None: not limited)

    def check_window(self, seq_len: int) -> None:
        if self.max_positions is not None and seq_len > self.max_positions:
            raise FFNLabError(f"seq_len={seq_len} exceeds {self.name}'s {self.max_positions} positions")


def open_model(spec: str, dtype: str = "bfloat16", progress: bool = True, device: str = "cpu",
               device_map: str | dict | None = None) -> Opened:
    """`spec`: an ffnlab run/checkpoint directory, or a pretrained name or path (`ffnlab.pretrained`), on
    `device` (a pretrained model too big for one: `device_map="auto"`). `tokens_of` gives CPU tensors;
    the analyses move them to the model's device."""
    from ffnlab.train.checkpoint import checkpoint_dir

    ckpt = checkpoint_dir(spec)
    if ckpt is not None and device_map is not None:
        raise FFNLabError(f"{spec} is an ffnlab run: it loads whole, on one device (device_map is for pretrained "
                          "models)")
    return open_run(ckpt, device) if ckpt is not None else open_pretrained(spec, dtype, progress, device, device_map)


def open_run(ckpt: Path, device: str = "cpu") -> Opened:
    """An ffnlab checkpoint and the tokenizer saved with it."""
    from ffnlab.data.corpus import load_corpus
    from ffnlab.train.checkpoint import load_model, load_tokenizer, load_trainer_state

    tok = load_tokenizer(ckpt)  # first: an old checkpoint without one fails before the weights load
    model = load_model(ckpt, device)
    trained_on = load_trainer_state(ckpt).data.split("-")[0]  # the corpus part of the data fingerprint
    caveats: list[str] = []
    if tok.vocab_size > model.config.vocab_size:
        raise FFNLabError(f"{str(ckpt)!r}: its tokenizer has {tok.vocab_size} tokens but the model only "
                          f"{model.config.vocab_size}")

    def own_tokens(path: str | None, n: int) -> Tensor:
        """Validation documents first, then training ones, each followed by end-of-text."""
        corpus = load_corpus(path)
        other = f"{corpus.name} is not the text the run was trained on"
        if corpus.fingerprint != trained_on and other not in caveats:
            caveats.append(other)
        parts, total = [], 0
        for doc in corpus.val + corpus.train:
            parts.append(tok.encode_documents([doc.text]))
            total += len(parts[-1])
            if total >= n:
                break
        return torch.as_tensor(np.concatenate(parts)[:n].astype(np.int64))
    run = ckpt.parent if ckpt.name in ("checkpoint", ".checkpoint-old") else ckpt
    return Opened(run.name, model, lambda s: tok.encode(s).tolist(), lambda ids: tok.decode(ids),
                  model.config.vocab_size, own_tokens, caveats, model.config.max_seq_len)


def open_pretrained(spec: str, dtype: str = "bfloat16", progress: bool = True, device: str = "cpu",
                    device_map: str | dict | None = None) -> Opened:
    from ffnlab.data.corpus import load_corpus
    from ffnlab.pretrained import load

    model = load(spec, dtype=dtype, progress=progress, device=device, device_map=device_map)  # hooks checked
    tok = model.tokenizer
    if tok is None:
        raise FFNLabError(f"{spec} has no tokenizer ({model.meta.get('no_tokenizer', 'none found')}); "
                          "analyses of text need one")
    encode = lambda s: tok(s, add_special_tokens=False, verbose=False)["input_ids"]  # noqa: E731

    def hf_tokens(path: str | None, n: int) -> Tensor:
        corpus = load_corpus(path)
        text = "\n".join(d.text for d in corpus.val + corpus.train)[: 8 * n]  # ~4 chars a token; margin
        return torch.tensor(encode(text)[:n], dtype=torch.long)
    caveats = []
    if "dequantised_from" in model.meta:
        caveats.append(f"{model.meta['name']}: weights are dequantised {model.meta['dequantised_from']} GGUF values")
    cfg = model.config
    positions = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return Opened(model.meta.get("name", spec), model, encode, lambda ids: tok.decode(ids), len(tok), hf_tokens,
                  caveats, positions)
