"""Loading the way users have models: a GGUF file of another family, a model id in the local HF
cache, and the refusals: an unsupported architecture before any weights are read, missing weights."""

import json
import sys

import gguf
import pytest
import torch
from safetensors.torch import load_file, save_file

from ffnlab.cli import main
from ffnlab.errors import FFNLabError
from ffnlab.pretrained import describe, load

from gguf_tiny import write_gguf
from hf_tiny import tiny_hf, tokens


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FFNLAB_CACHE", str(tmp_path / "ffnlab-cache"))
    return tmp_path / "ffnlab-cache"


def test_a_gguf_file_of_a_second_family_loads_and_says_what_it_was_dequantised_from(tmp_path, cache):
    hf = tiny_hf("qwen2")
    path = write_gguf(hf, tmp_path / "tiny-qwen2-f16.gguf")
    model = load(path, progress=False)
    assert (model.meta["family"], model.meta["dequantised_from"]) == ("qwen2", "F16")
    assert model.meta["gguf_tensor_types"]["F16"] > 0 and max(model.meta["hook_check"].values()) < 1e-5
    with torch.no_grad():
        torch.testing.assert_close(model(tokens()), hf(input_ids=tokens()).logits, rtol=0, atol=2e-2)  # F16 weights
    assert model.tokenizer("abc")["input_ids"] == [64, 65, 66]  # the GGUF's own vocabulary came along
    record = cache / "pretrained" / "tiny-qwen2-f16" / "ffnlab_conversion.json"
    stamp = record.stat().st_mtime_ns
    again = load(path, progress=False)  # converted once, then read from the cache
    assert record.stat().st_mtime_ns == stamp and again.meta["cache"] == model.meta["cache"]
    assert describe(path)["weights"] == "GGUF F16 (converted, cached)"


def test_a_gemma3_gguf_file_loads_with_its_sandwich_norms_and_gives_the_original_logits(tmp_path, cache):
    """The case that was refused: a Gemma 3 GGUF (llama.cpp stores Gemma's norms with the +1 folded in)."""
    hf = tiny_hf("gemma3_text")
    model = load(write_gguf(hf, tmp_path / "tiny-gemma3.gguf", arch="gemma3", half=False), progress=False)
    assert (model.meta["architecture"], model.meta["family"], model.meta["dequantised_from"]) == \
        ("gemma3_text", "gemma2", "ALL_F32")
    with torch.no_grad():
        assert torch.equal(model(tokens()), hf(input_ids=tokens()).logits)


def test_a_gguf_file_of_an_unsupported_architecture_is_refused_from_its_header(tmp_path, cache, monkeypatch):
    import transformers

    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    w.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()

    def no(*a, **k):
        raise AssertionError("the GGUF loader ran")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no)
    with pytest.raises(FFNLabError, match="unknown GGUF architecture 'mamba'.*gemma2, gemma3, gpt2, llama"):
        load(tmp_path / "m.gguf")
    assert not cache.exists()


def _fake_hub(root, repo: str, kind: str, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """The local HF cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    hf = tiny_hf(kind)
    hf.save_pretrained(repo_dir / "snapshots" / commit)
    return hf, commit


def test_a_model_id_resolves_in_the_local_hf_cache_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf, commit = _fake_hub(tmp_path / "hub", "tiny-org/tiny-gemma2", "gemma2")
    model = load("tiny-org/tiny-gemma2", progress=False)
    assert model.meta["name"] == "tiny-org/tiny-gemma2" and commit in model.meta["source"]
    with torch.no_grad():
        assert torch.equal(model(tokens()), hf(input_ids=tokens()).logits)
    assert load(f"tiny-org/tiny-gemma2@{commit}", progress=False).meta["family"] == "gemma2"
    assert main(["params", "tiny-org/tiny-gemma2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == hf.num_parameters()
    assert main(["params", "tiny-org/not-there"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'tiny-org/not-there' is not in the local Hugging Face cache" in err


def test_an_unsupported_architecture_is_refused_before_any_weights_file_is_opened(tmp_path, monkeypatch, capsys):
    """Counted by the files opened, not by a clock: no .safetensors file is touched."""
    import safetensors

    hf = tiny_hf("llama")
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "mamba"}))
    opened = []
    monkeypatch.setattr(safetensors, "safe_open", lambda path, *a, **k: opened.append(path))
    sys.addaudithook(lambda event, args: opened.append(args[0]) if event == "open" and _is_weights(args[0]) else None)
    watching = len(opened)
    with pytest.raises(FFNLabError, match="unknown architecture 'mamba'.*known: bert, distilbert, gemma, gemma2"):
        load(tmp_path)
    assert main(["params", str(tmp_path)]) == 2
    assert "unknown architecture 'mamba'" in capsys.readouterr().err
    assert opened[watching:] == []


def _is_weights(path) -> bool:
    return isinstance(path, (str, bytes)) and str(path).endswith((".safetensors", ".gguf"))


@pytest.mark.parametrize("kind,dropped", [("llama", "model.layers.1.mlp.down_proj.weight"),
                                          ("qwen2", "lm_head.weight"),  # an untied head
                                          ("bert", "bert.encoder.layer.0.output.dense.bias")])
def test_a_checkpoint_whose_weights_do_not_cover_the_model_is_refused(tmp_path, kind, dropped):
    hf = tiny_hf(kind)
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    assert dropped in state
    del state[dropped]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FFNLabError, match=f"do not cover the model: {dropped} missing"):
        load(tmp_path)


def test_every_gguf_name_of_a_family_is_one_transformers_converts():
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    from ffnlab.pretrained import FAMILIES

    names = {a for fam in FAMILIES.values() for a in fam.gguf}
    assert names and names <= set(GGUF_SUPPORTED_ARCHITECTURES)


def test_a_tokenizer_that_does_not_load_is_said_and_text_analyses_refuse(tmp_path):
    """A sentencepiece-only tokenizer without the sentencepiece package (or a broken one): the model loads,
    the reason is kept, and an analysis that needs text says why it cannot run."""
    from ffnlab.open import open_model

    tiny_hf("llama").save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    model = load(tmp_path, progress=False)
    assert model.tokenizer is None and "its tokenizer does not load" in model.meta["no_tokenizer"]
    with pytest.raises(FFNLabError, match="has no tokenizer \\(its tokenizer does not load"):
        open_model(str(tmp_path), device="cpu")
