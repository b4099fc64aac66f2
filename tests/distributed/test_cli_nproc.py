"""`ffnlab train --nproc 2` and `ffnlab memories --nproc 2`: torchrun's engine, end to end."""

import os
import subprocess
import sys

import pytest
import torch

from ffnlab.analysis.neurons import NeuronStats
from ffnlab.cli import main
from ffnlab.store import Store
from ffnlab.train.checkpoint import load_trainer_state


def ffnlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ffnlab", *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "FFNLAB_THREADS": "1"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    done = ffnlab("train", "--preset", "tiny", "--tokenizer", "char", "--steps", "2", "--batch-size", "4",
                  "--seq-len", "32", "--eval-every", "2", "--eval-batches", "2", "--nproc", "2", "--quiet",
                  "--results", str(root), "--out", str(root / "run"))
    assert done.returncode == 0, done.stderr[-2000:]
    return root, done


def test_train_nproc_records_one_run_and_one_sealed_checkpoint(trained):
    root, done = trained
    assert "2 steps, 2 processes" in done.stdout and done.stdout.count("trained tiny-mlp-s0") == 1
    (run,) = Store(root).runs(kind="train")
    assert run.status == "finished" and run.summary["processes"] == 2 and run.summary["steps"] == 2
    state = load_trainer_state(root / "run" / "checkpoint")
    assert state.step == 2 and state.weights_sha256 == run.summary["weights_sha256"]


def test_memories_nproc_equals_one_process(trained, tmp_path):
    root, _ = trained
    args = ["memories", str(root / "run"), "--tokens", "1024", "--seq-len", "32", "--k", "4", "--results", str(root)]
    done = ffnlab(*args, "--nproc", "2", "--out", str(tmp_path / "2"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("statistics in") == 1  # rank 0 alone reports
    assert main([*args, "--out", str(tmp_path / "1")]) == 0
    one, two = NeuronStats.load(tmp_path / "1"), NeuronStats.load(tmp_path / "2")
    assert one.count == two.count == 1024
    for a, b in zip(one.layers, two.layers, strict=True):
        assert torch.equal(a.top_index, b.top_index) and torch.equal(a.hist, b.hist)
        assert torch.allclose(a.var, b.var, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--nproc", "0"], "--nproc: must be a positive integer"),
    (["--nproc", "2", "--batch-size", "3"], "--batch-size 3 does not split evenly over 2 processes"),
])
def test_bad_nproc_is_one_line(args, message, tmp_path):
    done = ffnlab("train", "--preset", "tiny", "--tokenizer", "char", "--steps", "1", "--results", str(tmp_path),
                  *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
