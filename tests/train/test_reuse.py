"""Reuse verifies what it reuses; one process at a time trains into a directory; crashes leave
nothing behind (issue 16.2 and 16.5)."""

from __future__ import annotations

import fcntl
import json
import sqlite3
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

import ffnlab.train.trainer as trainer
from ffnlab.errors import FFNLabError
from ffnlab.model import preset
from ffnlab.store import Store
from ffnlab.train import TrainConfig, train, train_or_reuse
from ffnlab.train.checkpoint import load_tokenizer, load_trainer_state

CFG = TrainConfig(steps=4, batch_size=2, seq_len=16, eval_every=2, eval_batches=1, checkpoint_every=2,
                  log_every=1, precision="fp32")


def tiny(data):
    return preset("tiny", vocab_size=data.vocab_size, n_layers=1)


def test_reuse_never_hands_back_a_checkpoint_another_run_overwrote(char_data, tmp_path):
    """The reproduction: a short run into D, a longer one into D from scratch, the short one reused."""
    store = Store(tmp_path / "R")
    short = train(tiny(char_data), CFG, char_data, tmp_path / "D", store, progress=False)
    train(tiny(char_data), CFG.replace(steps=8), char_data, tmp_path / "D", store, progress=False, resume=False)
    again = train_or_reuse(tiny(char_data), CFG, char_data, tmp_path / "D2", store, progress=False)
    assert not again.reused and again.steps == 4 and again.run_id != short.run_id
    assert again.val_loss == short.val_loss  # trained afresh, the same as the first time
    assert train_or_reuse(tiny(char_data), CFG, char_data, tmp_path / "D3", store, progress=False).reused


def test_reuse_checks_weights_and_code(char_data, tmp_path, monkeypatch):
    store = Store(tmp_path / "R")
    first = train(tiny(char_data), CFG, char_data, tmp_path / "D", store, progress=False)
    summary = store.run(first.run_id).summary
    assert len(summary["weights_sha256"]) == 64 and summary["code"] == trainer.training_code(char_data)
    ckpt = tmp_path / "D" / "checkpoint"
    assert load_trainer_state(ckpt).weights_sha256 == summary["weights_sha256"]
    assert train_or_reuse(tiny(char_data), CFG, char_data, tmp_path / "x", store, progress=False).reused

    monkeypatch.setattr(trainer, "training_code", lambda data: "0123456789abcdef")  # the trainer changed
    assert not train_or_reuse(tiny(char_data), CFG, char_data, tmp_path / "y", store, progress=False).reused
    monkeypatch.undo()

    tensors = load_file(ckpt / "model.safetensors")
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0  # same shapes, other weights
    save_file(tensors, ckpt / "model.safetensors")
    runs = len(store.runs(kind="train"))
    newest = store.runs(kind="train")[0].id
    assert not train_or_reuse(tiny(char_data), CFG, char_data, tmp_path / "z", store, progress=False).reused
    assert len(store.runs(kind="train")) == runs + 1 and store.runs(kind="train")[0].id != newest


def test_a_second_process_training_into_the_same_directory_gets_one_clear_error(char_data, tmp_path):
    out = tmp_path / "D"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # another process holds the directory
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FFNLabError, match="another ffnlab process is training into"):
            train(tiny(char_data), CFG, char_data, out, Store(tmp_path / "R"), progress=False)
    assert Store(tmp_path / "R").runs() == []  # the refused process recorded nothing
    assert train(tiny(char_data), CFG, char_data, out, progress=False).steps == 4


def test_the_lock_holds_across_processes_and_dies_with_its_holder(char_data, tmp_path):
    out = tmp_path / "D"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from ffnlab.train.checkpoint import locked\n"
                               "with locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)",
                               str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FFNLabError, match="another ffnlab process is training into"):
            train(tiny(char_data), CFG, char_data, out, progress=False)
    finally:
        holder.kill()  # as kill -9: the lock goes with the process
        holder.wait()
    assert train(tiny(char_data), CFG, char_data, out, progress=False).steps == 4


def test_checkpoints_carry_the_tokenizer(char_data, tmp_path):
    train(tiny(char_data), CFG, char_data, tmp_path / "D", progress=False)
    tok = load_tokenizer(tmp_path / "D" / "checkpoint")
    assert tok.fingerprint == char_data.tokenizer.fingerprint and tok.vocab_size == char_data.vocab_size


class Killed(BaseException):
    pass


class DiesAt:
    def __init__(self, data, at: int):
        self.data, self.at = data, at
        self.vocab_size, self.fingerprint, self.tokenizer = data.vocab_size, data.fingerprint, data.tokenizer

    def batch(self, split, index, *args):
        if split == "train" and index == self.at:
            raise Killed
        return self.data.batch(split, index, *args)


def test_after_a_crash_metrics_are_recorded_once_and_dead_time_is_not_wall_time(char_data, tmp_path):
    store = Store(tmp_path / "R")
    cfg = CFG.replace(steps=6, checkpoint_every=3)
    with pytest.raises(Killed):  # dies in step 6, after logging steps 4 and 5 past the step-3 checkpoint
        train(tiny(char_data), cfg, DiesAt(char_data, 5), tmp_path / "D", store, progress=False)
    (run,) = store.runs()
    with sqlite3.connect(store.path) as conn:  # as if the process had been dead for an hour
        conn.execute("UPDATE runs SET started = started - 3600 WHERE id=?", (run.id,))
    (tmp_path / "D" / ".checkpoint-tmp-killed").mkdir()  # a checkpoint write that was killed
    (tmp_path / "D" / ".checkpoint-old").mkdir()
    (tmp_path / "D" / ".checkpoint-old" / "model.json").write_text("{}")  # half-deleted previous one
    done = train(tiny(char_data), cfg, char_data, tmp_path / "D", store, progress=False)
    assert done.run_id == run.id
    series = store.metrics(run.id, "train_loss")["train_loss"]
    assert [step for step, _ in series] == [1, 2, 3, 4, 5, 6]
    finished = store.run(run.id)
    assert finished.status == "finished" and 0 < finished.wall_seconds < 3600
    assert sorted(p.name for p in (tmp_path / "D").iterdir()) == [".lock", "checkpoint"]
    assert json.loads((tmp_path / "D" / "checkpoint" / "trainer.json").read_text())["wall"] > 0

