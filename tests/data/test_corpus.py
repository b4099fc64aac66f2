"""Corpora: the default plays, user paths, the leak-free split, and the errors users meet."""

from __future__ import annotations

import warnings

import pytest

from ffnlab.data import load_corpus
from ffnlab.data.corpus import default_corpus_files
from ffnlab.errors import FFNLabError


def test_default_corpus_is_the_modern_spelling_plays_split_by_document():
    files = default_corpus_files()
    assert len(files) == 42 and all(f.name.endswith("_gut.txt") for f in files)
    corpus = load_corpus()
    assert len(corpus.train) + len(corpus.val) == 42
    assert 1 <= len(corpus.val) <= 6
    train_names, val_names = {d.name for d in corpus.train}, {d.name for d in corpus.val}
    assert not train_names & val_names
    # no validation text (a 200-character passage from its middle) appears in training text
    train_text = "\n".join(d.text for d in corpus.train)
    for doc in corpus.val:
        middle = len(doc.text) // 2
        assert doc.text[middle:middle + 200] not in train_text
    assert load_corpus().fingerprint == corpus.fingerprint


def test_single_document_is_split_into_disjoint_contiguous_blocks(tmp_path):
    lines = [f"line {i} of a single long document" for i in range(2000)]
    (tmp_path / "one.txt").write_text("\n".join(lines) + "\n")
    corpus = load_corpus(str(tmp_path / "one.txt"))
    train = [ln for d in corpus.train for ln in d.text.splitlines()]
    val = [ln for d in corpus.val for ln in d.text.splitlines()]
    assert sorted(train + val) == sorted(lines)  # every line once: nothing lost, nothing shared
    assert not set(train) & set(val)
    assert 0.05 < len(val) / len(lines) < 0.15


def test_fingerprint_follows_the_content(tmp_path):
    for i in range(5):
        (tmp_path / f"d{i}.txt").write_text(f"document {i}\n" * 50)
    before = load_corpus(str(tmp_path)).fingerprint
    (tmp_path / "d3.txt").write_text("document 3 changed\n" * 50)
    assert load_corpus(str(tmp_path)).fingerprint != before
    assert load_corpus(str(tmp_path / "d*.txt")).train  # a glob works too


def test_undecodable_files_are_skipped_and_counted(tmp_path):
    (tmp_path / "good.txt").write_text("fine text\n" * 100)
    (tmp_path / "also.txt").write_text("more text\n" * 100)
    (tmp_path / "bad.bin").write_bytes(b"\xff\xfe\x00\x81" * 50)
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        corpus = load_corpus(str(tmp_path))
    assert corpus.skipped == 1 and len(corpus.train) + len(corpus.val) == 2


@pytest.mark.parametrize("setup, path, message", [
    (lambda p: None, "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir(), "empty", "contains no files"),
    (lambda p: None, "*.nothing", "matches no files"),
    (lambda p: (p / "blank.txt").write_text("  \n\n"), "blank.txt", "is empty: it holds no text"),
    (lambda p: (p / "bad.txt").write_bytes(b"\xff\xfe\x81"), "bad.txt", "is empty: all 1 files are not UTF-8"),
    (lambda p: (p / "short.txt").write_text("too short"), "short.txt", "too small to split"),
])
def test_bad_corpus_paths_give_one_line_errors(tmp_path, setup, path, message):
    setup(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FFNLabError, match=message) as err:
            load_corpus(str(tmp_path / path))
    assert "\n" not in str(err.value)


def test_a_one_line_corpus_is_split_mid_line(tmp_path):
    """Issue 16.4: a 1.3 MB corpus without a line break was 'too small to split'."""
    text = "To be, or not to be, that is the question. " * 30_000  # 1.3 MB, one line
    (tmp_path / "one.txt").write_text(text)
    corpus = load_corpus(str(tmp_path / "one.txt"))
    assert len(corpus.train) == 18 and len(corpus.val) == 2
    blocks = sorted(corpus.train + corpus.val, key=lambda d: int(d.name.rsplit("#", 1)[1]))
    assert "".join(d.text for d in blocks) == text
