"""Corpus loading under arbitrary files: a split corpus, or one FFNLabError (issue 16.6)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ffnlab.data import load_corpus
from ffnlab.errors import FFNLabError

pytestmark = pytest.mark.fuzz
contents = st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode),
                     st.text(alphabet="ab \n", min_size=0, max_size=3000).map(str.encode))


@given(st.lists(contents, min_size=1, max_size=4))
def test_any_files_load_or_fail_in_one_line(files):
    with tempfile.TemporaryDirectory() as tmp:
        for i, data in enumerate(files):
            (Path(tmp) / f"f{i}.txt").write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # skipped non-UTF-8 files are announced by a warning
                corpus = load_corpus(tmp)
        except FFNLabError as err:
            assert "\n" not in str(err)
            return
    assert corpus.train and corpus.val
    texts = [d.text for d in corpus.train + corpus.val]
    assert all(texts) and len(corpus.fingerprint) == 16
    if len(files) == 1:  # one document: its blocks put back together are the text
        blocks = sorted(corpus.train + corpus.val, key=lambda d: int(d.name.rsplit("#", 1)[1]))
        assert "".join(d.text for d in blocks) == files[0].decode().replace("\r\n", "\n")
