"""Tokenized corpora as memory-mapped arrays, and batches that are pure functions of their index.

`batch(split, index, batch_size, seq_len, seed)` draws the same windows for the same
arguments in any process, so a resumed run sees exactly the batches it would have seen
without saving any iterator state. Anything with `vocab_size`, `fingerprint` and this
`batch` method can be trained on (targets of -100 are ignored by the loss).
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ffnlab.data.corpus import load_corpus
from ffnlab.data.tokenizer import Tokenizer, get_tokenizer
from ffnlab.errors import FFNLabError, unknown
from ffnlab.results import atomic_write_bytes, results_dir

SPLITS = ("train", "val", "test")
IGNORE = -100


def _rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise FFNLabError(f"seed and batch index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index, stream])


class TokenData:
    """Token ids of the training, validation and test splits (1-D, memory-mapped) and their tokenizer.

    `cache` is where the token arrays live; n-gram baselines are cached beside them.
    """

    def __init__(self, tokenizer: Tokenizer, train: np.ndarray, val: np.ndarray, test: np.ndarray, fingerprint: str,
                 cache: Path | None = None):
        self.tokenizer, self.train, self.val, self.test, self.fingerprint = tokenizer, train, val, test, fingerprint
        self.cache = cache

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def mask_id(self) -> int | None:
        return self.tokenizer.mask_id

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise unknown("data split", name, SPLITS)
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def batch(self, split: str, index: int, batch_size: int, seq_len: int, seed: int) -> tuple[Tensor, Tensor]:
        """Random windows: inputs (B, T) and the next tokens as targets (B, T), both int64."""
        tokens = self.split(split)
        if len(tokens) < seq_len + 2:
            raise FFNLabError(f"the {split} split has {len(tokens)} tokens, too few for seq_len={seq_len}; "
                              "use a bigger corpus or a shorter sequence length")
        starts = _rng(seed, split, index).integers(0, len(tokens) - seq_len - 1, size=batch_size)
        windows = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)  # (B, T+1)
        w = torch.from_numpy(windows)
        return w[:, :-1], w[:, 1:]

    def windows(self, split: str, seq_len: int, max_tokens: int | None = None) -> tuple[Tensor, Tensor]:
        """The whole split (or its first `max_tokens` predicted tokens) as consecutive windows:
        inputs (N, T) and next-token targets (N, T); every token is predicted once."""
        tokens = self.split(split)
        n = (len(tokens) - 1) // seq_len
        if max_tokens is not None:
            n = min(n, max(1, max_tokens // seq_len))
        if n < 1:
            raise FFNLabError(f"the {split} split has {len(tokens)} tokens, too few for seq_len={seq_len}")
        ids = torch.from_numpy(np.asarray(tokens[: n * seq_len + 1], dtype=np.int64))
        return ids[:-1].view(n, seq_len), ids[1:].view(n, seq_len)


class MLMData:
    """Masked-LM batches for encoders (BERT, Devlin et al. 2019): of the `prob` chosen positions
    80% become the mask token, 10% a random token, 10% stay; targets are -100 elsewhere."""

    def __init__(self, data: TokenData, mask_id: int | None = None, prob: float = 0.15):
        mask_id = data.mask_id if mask_id is None else mask_id
        if mask_id is None:
            raise FFNLabError("masked-LM training needs a tokenizer with a mask token ([MASK] or <|mask|>)")
        if not 0 < prob < 1:
            raise FFNLabError(f"mask probability must be in (0, 1), got {prob}")
        self.data, self.mask_id, self.prob = data, mask_id, prob

    @property
    def vocab_size(self) -> int:
        return self.data.vocab_size

    @property
    def fingerprint(self) -> str:
        return f"{self.data.fingerprint}-mlm{self.prob}"

    @property
    def tokenizer(self) -> Tokenizer:
        return self.data.tokenizer

    def batch(self, split: str, index: int, batch_size: int, seq_len: int, seed: int) -> tuple[Tensor, Tensor]:
        tokens, _ = self.data.batch(split, index, batch_size, seq_len, seed)
        tokens = tokens.numpy()
        rng = _rng(seed, split, index, stream=1)
        chosen = rng.random(tokens.shape) < self.prob
        chosen[:, 0] |= ~chosen.any(axis=1)  # every row predicts at least one token
        r = rng.random(tokens.shape)
        random_ids = rng.integers(0, self.vocab_size, size=tokens.shape)
        inputs = np.where(chosen & (r < 0.8), self.mask_id, tokens)
        inputs = np.where(chosen & (r >= 0.8) & (r < 0.9), random_ids, inputs)
        targets = np.where(chosen, tokens, IGNORE)
        return torch.from_numpy(inputs), torch.from_numpy(targets)


def _cached_tokens(path: Path, make: callable, vocab_size: int) -> np.ndarray:
    if not path.is_file():
        ids = make()
        dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
        buf = io.BytesIO()
        np.save(buf, ids.astype(dtype))
        atomic_write_bytes(path, buf.getvalue())
    return np.load(path, mmap_mode="r")


def prepare_data(path: str | None = None, tokenizer: str = "bpe", vocab_size: int = 4096,
                 cache_dir: str | Path | None = None) -> TokenData:
    """Load a corpus (None: the packaged Shakespeare), tokenize it and cache the token arrays.

    `tokenizer` is "bpe" (trained on the training split, `vocab_size` tokens), "char", or a
    model directory holding `tokenizer.json`. Caches live in `cache_dir` (default: results/cache).
    """
    cache = Path(cache_dir) if cache_dir is not None else results_dir() / "cache"
    corpus = load_corpus(path)
    tok = get_tokenizer(tokenizer, corpus, vocab_size, cache)
    arrays = {}
    for split in SPLITS:
        docs = corpus.split(split)
        file = cache / "tokens" / f"{corpus.fingerprint}-{tok.fingerprint}-{split}.npy"
        arrays[split] = _cached_tokens(file, lambda d=docs: tok.encode_documents(x.text for x in d), tok.vocab_size)
    return TokenData(tok, arrays["train"], arrays["val"], arrays["test"], f"{corpus.fingerprint}-{tok.fingerprint}",
                     cache / "tokens")
