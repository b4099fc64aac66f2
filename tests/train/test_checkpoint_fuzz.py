"""Loading damaged checkpoints, results and statistics: the thing itself, or one FFNLabError (issue 16.6)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import json_values
from ffnlab.analysis.neurons import NeuronStats
from ffnlab.errors import FFNLabError
from ffnlab.model import Transformer, preset
from ffnlab.results import Result
from ffnlab.train.checkpoint import TrainerState, load_model, load_trainer_state, save_checkpoint

pytestmark = pytest.mark.fuzz
FILES = ["model.safetensors", "model.json", "trainer.json"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = Transformer(preset("tiny", n_layers=1, d_model=16, n_heads=2, vocab_size=32))
    opt = torch.optim.AdamW(model.parameters())
    out = tmp_path_factory.mktemp("run")
    return save_checkpoint(out, model, opt, TrainerState(step=1, train={}, data="x"))


def damage(data: bytes, how: str, at: float, byte: int) -> bytes:
    i = int(at * len(data))
    if how == "truncate":
        return data[:i]
    if how == "flip":
        return data[:i] + bytes([byte]) + data[i + 1:]
    return data[:i] + bytes([byte]) * 8 + data[i:]  # insert


@given(st.sampled_from(FILES), st.sampled_from(["truncate", "flip", "insert"]), st.floats(0, 1, exclude_max=True),
       st.integers(0, 255))
def test_a_damaged_checkpoint_loads_or_fails_in_one_line(checkpoint, file, how, at, byte):
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint"
        shutil.copytree(checkpoint, ckpt)
        (ckpt / file).write_bytes(damage((ckpt / file).read_bytes(), how, at, byte))
        try:
            model = load_model(ckpt) if file != "trainer.json" else load_trainer_state(ckpt)
        except FFNLabError as err:
            assert "\n" not in str(err)
            return
    assert model is not None


@given(st.one_of(json_values, st.text(max_size=50)))
def test_a_damaged_result_loads_or_fails_in_one_line(content):
    import json

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        try:
            Result.load(path)
        except FFNLabError:
            pass


@given(st.dictionaries(st.sampled_from(["config", "n_layers", "count", "seq_len", "x"]), json_values, max_size=5),
       st.booleans())
def test_damaged_neuron_statistics_load_or_fail_in_one_line(meta, with_tokens):
    import json

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "meta.json").write_text(json.dumps(meta))
        if with_tokens:
            (Path(tmp) / "tokens.npy").write_bytes(b"\x93NUMPY garbage")
        try:
            NeuronStats.load(tmp)
        except FFNLabError:
            pass
