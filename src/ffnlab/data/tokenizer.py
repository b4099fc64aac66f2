"""Tokenizers behind one small interface: byte-level BPE, characters, or a pretrained `tokenizer.json`.

BPE (as in GPT-2, Radford et al. 2019) is trained with Hugging Face `tokenizers` on the
training split only and cached on disk by corpus fingerprint and vocabulary size.
Every tokenizer has an end-of-text token (between documents) and, where it has one, a
mask token (for masked-LM training of encoders).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from ffnlab.data.corpus import Corpus
from ffnlab.errors import FFNLabError, unknown
from ffnlab.results import atomic_write_text

KINDS = ("bpe", "char")  # or a path to a directory holding tokenizer.json
EOT, MASK, UNK = "<|endoftext|>", "<|mask|>", "<|unk|>"
MASK_NAMES = (MASK, "[MASK]", "<mask>")
EOT_NAMES = (EOT, "</s>", "[SEP]", "<|im_end|>")


class Tokenizer(ABC):
    """A Hugging Face `tokenizers.Tokenizer` or a character table, with the ids training needs."""

    def __init__(self, kind: str, vocab_size: int, fingerprint: str, eot_id: int, mask_id: int | None):
        self.kind, self.vocab_size, self.fingerprint = kind, vocab_size, fingerprint
        self.eot_id, self.mask_id = eot_id, mask_id

    @abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """Token ids of one text."""

    def encode_documents(self, texts: Iterable[str]) -> np.ndarray:
        """All documents, each followed by the end-of-text token, as one 1-D int64 array."""
        parts = []
        for ids in self._encode_many(list(texts)):
            parts.extend([ids, np.array([self.eot_id], dtype=np.int64)])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _encode_many(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the tokenizer as JSON (`load_saved` reads it back)."""


class HFTokenizerWrapper(Tokenizer):
    def __init__(self, tok: HFTokenizer, kind: str):
        vocab = tok.get_vocab(with_added_tokens=True)
        eot = next((vocab[n] for n in EOT_NAMES if n in vocab), None)
        if eot is None:
            raise FFNLabError(f"tokenizer has no end-of-text token; expected one of {', '.join(EOT_NAMES)}")
        mask = next((vocab[n] for n in MASK_NAMES if n in vocab), None)
        size = max(tok.get_vocab_size(with_added_tokens=True), max(vocab.values()) + 1)
        digest = hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]
        super().__init__(kind, size, digest, eot, mask)
        self.tok = tok

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def _encode_many(self, texts: list[str]) -> list[np.ndarray]:
        encs = self.tok.encode_batch(texts, add_special_tokens=False)  # parallel in Rust
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.tok.to_str())


class CharTokenizer(Tokenizer):
    """One token per Unicode character seen in training text; unseen characters map to UNK."""

    def __init__(self, chars: str):
        self.itos = [EOT, MASK, UNK, *chars]
        self.table = {ch: i for i, ch in enumerate(self.itos) if i >= 3}
        digest = hashlib.sha256(json.dumps(self.itos).encode()).hexdigest()[:16]
        super().__init__("char", len(self.itos), digest, 0, 1)
        keys = np.array([ord(c) for c in chars], dtype=np.uint32)
        order = np.argsort(keys)
        self._keys, self._ids = keys[order], order.astype(np.int64) + 3  # sorted code points -> ids

    @classmethod
    def train(cls, corpus: Corpus) -> CharTokenizer:
        return cls("".join(sorted({ch for d in corpus.train for ch in d.text})))

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if not len(self._keys):
            return np.full(len(codes), 2, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._keys, codes), 0, len(self._keys) - 1)
        return np.where(self._keys[pos] == codes, self._ids[pos], 2)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.itos[i] for i in ids)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({"kind": "char", "chars": "".join(self.itos[3:])}))


def train_bpe(corpus: Corpus, vocab_size: int) -> HFTokenizerWrapper:
    """Byte-level BPE on the training documents (the validation split is never seen)."""
    if vocab_size < 260:
        raise FFNLabError(f"BPE vocab_size must be at least 260 (256 bytes + special tokens), got {vocab_size}")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT, MASK], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((d.text for d in corpus.train), trainer=trainer, length=len(corpus.train))
    return HFTokenizerWrapper(tok, "bpe")


def load_pretrained(path: str | Path) -> HFTokenizerWrapper:
    """`tokenizer.json` in a model directory (or the file itself)."""
    p = Path(path).expanduser()
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise FFNLabError(f"no tokenizer.json at {str(path)!r}; tokenizers are "
                          f"{', '.join(KINDS)} or a model directory holding tokenizer.json")
    try:
        tok = HFTokenizer.from_file(str(file))
    except Exception as err:  # the Rust library raises a bare Exception for malformed files
        raise FFNLabError(f"cannot read tokenizer {str(file)!r}: {err}") from None
    tok.no_padding()  # a model's tokenizer.json may pad or truncate to its context; a corpus must not be
    tok.no_truncation()
    return HFTokenizerWrapper(tok, f"pretrained:{file.parent.name}")


def load_saved(path: str | Path) -> Tokenizer:
    """A tokenizer written by `Tokenizer.save`: a char table or a Hugging Face `tokenizer.json`."""
    file = Path(path)
    try:
        text = file.read_text()
        saved = json.loads(text)
        if isinstance(saved, dict) and saved.get("kind") == "char":
            if not isinstance(saved.get("chars"), str):
                raise ValueError("'chars' is not a string")
            return CharTokenizer(saved["chars"])
        return HFTokenizerWrapper(HFTokenizer.from_str(text), "bpe")
    except FFNLabError:
        raise
    except Exception as err:  # OSError, bad JSON, or the Rust library's bare Exception
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FFNLabError(f"cannot read tokenizer {str(file)!r}: {why}") from None


def get_tokenizer(kind: str, corpus: Corpus, vocab_size: int, cache_dir: Path) -> Tokenizer:
    """Build or load from cache: `bpe` and `char` are trained on `corpus`; anything else is a path."""
    if kind not in KINDS:
        if Path(kind).expanduser().exists():
            return load_pretrained(kind)
        raise unknown("tokenizer", kind, [*KINDS, "<model directory with tokenizer.json>"])
    suffix = f"-{vocab_size}" if kind == "bpe" else ""
    path = cache_dir / "tokenizers" / f"{kind}-{corpus.fingerprint}{suffix}.json"
    if path.is_file():
        return load_saved(path)
    tok: Tokenizer = train_bpe(corpus, vocab_size) if kind == "bpe" else CharTokenizer.train(corpus)
    tok.save(path)
    return tok
