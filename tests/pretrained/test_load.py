"""Loading local checkpoints: the supported architectures, and clear errors for everything else."""

import json

import pytest
import torch

from ffnlab.cli import main
from ffnlab.errors import FFNLabError
from ffnlab.pretrained import describe, load

from hf_tiny import L, tiny_hf, tokens


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny GPT-2 / Llama / BERT (MLM head) checkpoints written with save_pretrained (safetensors)."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for kind in ("gpt2", "llama", "bert"):
        hf = tiny_hf(kind).eval()
        hf.save_pretrained(root / kind)
        out[kind] = (root / kind, hf)
    return out


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert"])
def test_loaded_checkpoint_gives_the_hf_logits(saved, kind):
    path, hf = saved[kind]
    model = load(path)
    x = tokens()
    with torch.no_grad():
        assert torch.equal(model(x), hf(input_ids=x).logits)
    assert model.meta["hook_check"]["logits with hooks"] == 0.0
    assert model.meta["source"] == str(path) and model.meta["architecture"] == hf.config.model_type


def test_describe_counts_parameters_without_loading(saved):
    path, hf = saved["llama"]
    row = describe(path)
    assert row["params"] == sum(p.numel() for p in hf.parameters())  # tied head counted once
    assert (row["layers"], row["architecture"]) == (L, "llama")


def test_bf16_load(saved):
    model = load(saved["llama"][0], dtype="bfloat16")
    assert model(tokens()).dtype == torch.bfloat16


def test_unknown_dtype(saved):
    with pytest.raises(FFNLabError, match="unknown dtype 'bf16'.*bfloat16"):
        load(saved["gpt2"][0], dtype="bf16")


def test_unsupported_architecture_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(FFNLabError, match="unknown architecture 't5'.*bert, distilbert, gemma"):
        load(tmp_path)


def test_missing_and_corrupt_files(tmp_path, saved):
    with pytest.raises(FFNLabError, match="no such file"):
        load(tmp_path / "nope")
    with pytest.raises(FFNLabError, match="no config.json"):
        load(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((saved["gpt2"][0] / "config.json").read_text())
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(FFNLabError, match="not a readable safetensors"):
        load(bad)
    (bad / "model.safetensors").unlink()
    (bad / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FFNLabError, match="safetensors only"):
        load(bad)
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"not gguf at all")
    with pytest.raises(FFNLabError, match="not a readable GGUF"):
        load(gguf)


def test_models_command_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    assert main(["models", "--path", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown architecture 't5'" in err


def test_models_command_lists_a_given_checkpoint(saved, capsys):
    assert main(["models", "--json", "--path", str(saved["gpt2"][0])]) == 0
    rows = json.loads(capsys.readouterr().out)
    mine = [r for r in rows if r["source"] == str(saved["gpt2"][0])]
    assert mine and mine[0]["architecture"] == "gpt2" and mine[0]["d_ff"] == 64


def test_device_argument_places_the_model(saved, monkeypatch):
    from ffnlab import device as dev

    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    path, hf = saved["llama"]
    model = load(path, device="auto", dtype="float32")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    with torch.no_grad():
        assert torch.equal(model(tokens()), hf(input_ids=tokens()).logits)
    with pytest.raises(FFNLabError, match="device 'cuda' is not available here; available: auto, cpu"):
        load(path, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert"])
def test_loaded_on_cuda_gives_the_cpu_logits_and_passes_its_hook_check(saved, kind):
    path, hf = saved[kind]
    model = load(path, device="cuda")  # verify() runs on the GPU
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    with torch.no_grad():
        logits = model(tokens().cuda())
        assert logits.device.type == "cuda"
        torch.testing.assert_close(logits.cpu(), hf(input_ids=tokens()).logits, rtol=1e-4, atol=1e-4)
    assert model.meta["hook_check"]["logits with hooks"] == 0.0


def test_models_command_lists_the_families(capsys):
    from ffnlab.pretrained import FAMILIES

    assert main(["models", "--families", "--json"]) == 0
    rows = {r["family"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(FAMILIES)
    assert rows["gpt_neox"]["block"] == "parallel" and rows["bert"]["block"] == "post-ln"
    assert rows["phi3"]["ffn"] == "gated" and "gemma3_text" in rows["gemma2"]["model_types"]
