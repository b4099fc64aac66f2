"""Training on a device: auto = cpu without CUDA, RNG of the device in the checkpoint, exact resume there."""

import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from ffnlab import device as dev
from ffnlab.cli import main
from ffnlab.errors import FFNLabError
from ffnlab.store import Store
from ffnlab.train import evaluate, load_model, train
from ffnlab.train.checkpoint import checkpoint_dir

from test_commands import TINY
from test_trainer import CFG, Crash, CrashAt, tiny, weights


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k].cpu(), wb[k].cpu()) for k in wa)


def test_cpu_and_auto_without_cuda_train_the_same_run(char_data, tmp_path, monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    cfg = CFG.replace(steps=6, checkpoint_every=3)
    on_cpu = train(tiny(char_data.vocab_size), cfg, char_data, tmp_path / "cpu", progress=False, device="cpu")
    auto = train(tiny(char_data.vocab_size), cfg, char_data, tmp_path / "auto", progress=False, device="auto")
    assert same_weights(on_cpu.model, auto.model)
    assert [h["train_loss"] for h in auto.history] == [h["train_loss"] for h in on_cpu.history]
    assert auto.val_loss == on_cpu.val_loss and auto.summary["device"] == on_cpu.summary["device"] == "cpu"
    saved = load_file(checkpoint_dir(tmp_path / "auto") / "optimizer.safetensors")
    assert [k for k in saved if k.startswith("rng.")] == ["rng.torch"]  # the CPU has no generator of its own
    with pytest.raises(FFNLabError, match="device 'cuda' is not available here"):
        train(tiny(char_data.vocab_size), cfg, char_data, tmp_path / "cuda", progress=False, device="cuda")


def test_train_command_with_device_cpu_and_auto_writes_identical_checkpoints(play_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    for device in ("cpu", "auto"):
        assert main(["train", *TINY, "--data", str(play_dir), "--results", str(tmp_path), "--name", device,
                     "--device", device]) == 0
    a, b = (load_file(tmp_path / "runs" / d / "checkpoint" / "model.safetensors") for d in ("cpu", "auto"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    runs = Store(tmp_path).runs(kind="train")
    assert [r.summary["device"] for r in runs] == ["cpu", "cpu"]


def test_a_checkpoint_from_another_device_resumes_exactly_on_the_cpu(char_data, tmp_path):
    """A GPU generator's state in the checkpoint is kept apart: resuming on the CPU is exact all the same."""
    cfg = CFG.replace(steps=8, checkpoint_every=4)
    whole = train(tiny(char_data.vocab_size), cfg, char_data, tmp_path / "whole", progress=False, device="cpu")
    with pytest.raises(Crash):
        train(tiny(char_data.vocab_size), cfg, CrashAt(char_data, 11), tmp_path / "cut", progress=False)
    opt_file = checkpoint_dir(tmp_path / "cut") / "optimizer.safetensors"
    tensors = load_file(opt_file)
    tensors["rng.cuda"] = torch.arange(16, dtype=torch.uint8)  # as written on a GPU
    save_file(tensors, opt_file)
    resumed = train(tiny(char_data.vocab_size), cfg, char_data, tmp_path / "cut", progress=False, device="cpu")
    assert resumed.steps == 8 and same_weights(whole.model, resumed.model)
    assert resumed.val_loss == whole.val_loss


def test_evaluate_and_load_model_follow_the_device(char_data, tmp_path):
    cfg = CFG.replace(steps=2, checkpoint_every=2)
    result = train(tiny(char_data.vocab_size), cfg, char_data, tmp_path, progress=False, device="cpu")
    meta = load_model(tmp_path, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    loaded = load_model(tmp_path, device="cpu")
    assert same_weights(loaded, result.model)
    assert evaluate(loaded, char_data, "val", cfg.eval_batches, cfg.batch_size, cfg.seq_len, cfg.seed) \
        == result.val_loss


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def deterministic(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


@needs_cuda
def test_cuda_run_resumes_bit_exactly_on_cuda_and_loads_on_the_cpu(char_data, tmp_path, deterministic):
    cfg = CFG.replace(steps=8, checkpoint_every=4)  # dropout: the CUDA generator decides the masks
    whole = train(tiny(char_data.vocab_size), cfg, char_data, tmp_path / "whole", progress=False, device="cuda")
    assert whole.summary["device"] == "cuda"
    assert all(p.device.type == "cuda" for p in whole.model.parameters())
    with pytest.raises(Crash):
        train(tiny(char_data.vocab_size), cfg, CrashAt(char_data, 11), tmp_path / "cut", progress=False,
              device="cuda")
    shutil.copytree(tmp_path / "cut", tmp_path / "cut-without-rng")
    opt_file = checkpoint_dir(tmp_path / "cut-without-rng") / "optimizer.safetensors"
    tensors = load_file(opt_file)
    assert "rng.cuda" in tensors
    save_file({k: v for k, v in tensors.items() if k != "rng.cuda"}, opt_file)
    resumed = train(tiny(char_data.vocab_size), cfg, char_data, tmp_path / "cut", progress=False, device="cuda")
    assert same_weights(whole.model, resumed.model) and resumed.val_loss == whole.val_loss
    # without the saved CUDA generator the dropout masks after the resume differ: the saved state is what counts
    blind = train(tiny(char_data.vocab_size), cfg, char_data, tmp_path / "cut-without-rng", progress=False,
                  device="cuda")
    assert not same_weights(whole.model, blind.model)
    on_cpu = load_model(tmp_path / "whole", device="cpu")
    assert same_weights(on_cpu, whole.model)


@needs_cuda
def test_bf16_on_cuda_trains_under_autocast(char_data, tmp_path):
    cfg = CFG.replace(steps=20, precision="bf16", checkpoint_every=20, eval_every=20)
    result = train(tiny(char_data.vocab_size), cfg, char_data, tmp_path, progress=False, device="cuda")
    assert result.val_loss < math.log(char_data.vocab_size) - 0.3  # learned something, in bf16
    x = torch.zeros(1, 8, dtype=torch.long, device="cuda")
    with dev.autocast(torch.device("cuda"), "bf16"):
        assert result.model(x).dtype == torch.bfloat16
