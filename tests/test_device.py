"""Device choice: auto picks the best device present, absent devices are one-line errors."""

import pytest
import torch

from ffnlab import device as dev
from ffnlab.errors import FFNLabError


@pytest.fixture
def only_cpu(monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    monkeypatch.setattr(dev, "mps_available", lambda: False)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, only_cpu):
    assert dev.resolve_device("auto") == dev.resolve_device(None) == dev.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(dev, "mps_available", lambda: True)
    assert dev.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    assert dev.resolve_device("auto") == torch.device("cuda")


def test_absent_and_unknown_devices_are_one_line_errors(only_cpu):
    for name in ("cuda", "cuda:1", "mps", torch.device("cuda")):
        with pytest.raises(FFNLabError, match=r"is not available here; available: auto, cpu$"):
            dev.resolve_device(name)
    with pytest.raises(FFNLabError, match=r"unknown device 'gpu'.* known: auto, cpu, cuda, mps"):
        dev.resolve_device("gpu")
    with pytest.raises(FFNLabError, match="did you mean 'cuda'"):
        dev.resolve_device("cdua")
    assert dev.resolve_device("meta") == torch.device("meta")


def test_autocast_follows_precision_and_device():
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with dev.autocast("cpu", "fp32"):
        assert (x @ w).dtype == torch.float32
    with dev.autocast("cpu", "bf16"):
        assert (x @ w).dtype == (torch.bfloat16 if dev.bf16_supported("cpu") else torch.float32)
    assert not dev.bf16_supported("mps") and not dev.bf16_supported("meta")


def test_batches_stay_put_on_cpu_and_move_to_meta():
    batch = (torch.arange(6).view(2, 3), torch.ones(2, 3))
    same = dev.to_device(batch, torch.device("cpu"))
    assert all(a is b for a, b in zip(same, batch))
    moved = dev.to_device(batch, torch.device("meta"))
    assert [t.device.type for t in moved] == ["meta", "meta"] and moved[0].shape == (2, 3)


def test_cpu_has_no_rng_of_its_own_and_module_device_reads_parameters():
    assert dev.rng_state(torch.device("cpu")) is None
    assert dev.module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert dev.module_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert dev.module_device(torch.nn.ReLU()) == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_state_round_trips_and_autocast_is_bf16():
    cuda = dev.resolve_device("auto")
    assert cuda.type == "cuda"
    state = dev.rng_state(cuda)
    a = torch.rand(5, device=cuda)
    dev.set_rng_state(cuda, state)
    assert torch.equal(torch.rand(5, device=cuda), a)
    x = torch.randn(4, 8, device=cuda)
    with dev.autocast(cuda, "bf16"):
        assert (x @ x.T).dtype == torch.bfloat16
    moved = dev.to_device((torch.ones(2),), cuda)
    assert moved[0].device.type == "cuda" and moved[0].sum().item() == 2
