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
    assert len(corpus.train) + len(corpus.val) + len(corpus.test) == 42
    assert 1 <= len(corpus.val) <= 6 and 1 <= len(corpus.test) <= 6
    names = [{d.name for d in corpus.split(s)} for s in ("train", "val", "test")]
    assert not names[0] & names[1] and not names[0] & names[2] and not names[1] & names[2]
    # no held-out text (a 200-character passage from its middle) appears in another split
    for held, others in (("val", ("train", "test")), ("test", ("train", "val"))):
        other_text = "\n".join(d.text for s in others for d in corpus.split(s))
        for doc in corpus.split(held):
            middle = len(doc.text) // 2
            assert doc.text[middle:middle + 200] not in other_text
    assert load_corpus().fingerprint == corpus.fingerprint


def test_single_document_is_split_into_disjoint_contiguous_blocks(tmp_path):
    lines = [f"line {i} of a single long document" for i in range(2000)]
    (tmp_path / "one.txt").write_text("\n".join(lines) + "\n")
    corpus = load_corpus(str(tmp_path / "one.txt"))
    train, val, test = ([ln for d in corpus.split(s) for ln in d.text.splitlines()] for s in ("train", "val", "test"))
    assert sorted(train + val + test) == sorted(lines)  # every line once: nothing lost, nothing shared
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert 0.05 < len(val) / len(lines) < 0.15 and 0.05 < len(test) / len(lines) < 0.15


def test_token_splits_are_disjoint_and_the_test_windows_cover_the_split(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"d{i}.txt").write_text(f"document number {i} says {'abc' * i}\n" * 40)
    from ffnlab.data import prepare_data

    data = prepare_data(str(docs), "char", cache_dir=tmp_path / "cache")
    corpus = load_corpus(str(docs))
    for split in ("train", "val", "test"):
        expected = data.tokenizer.encode_documents(d.text for d in corpus.split(split))
        assert list(data.split(split)) == list(expected)
    x, y = data.windows("test", 16)
    assert x.shape == y.shape and x.shape[1] == 16 and x.numel() == (len(data.test) - 1) // 16 * 16
    assert (x[:, 1:] == y[:, :-1]).all() and (x[1:, 0] == y[:-1, -1]).all()  # consecutive: each token once


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
    assert corpus.skipped == 1 and {d.name.split("#")[0] for d in corpus.train} == {"good.txt", "also.txt"}


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
    assert len(corpus.train) == 16 and len(corpus.val) == 2 and len(corpus.test) == 2
    blocks = sorted(corpus.train + corpus.val + corpus.test, key=lambda d: int(d.name.rsplit("#", 1)[1]))
    assert "".join(d.text for d in blocks) == text
