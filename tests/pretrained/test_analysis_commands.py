"""`memories`, `neuron`, `trace` and `params` on a model of another family than the packaged ones:
a Qwen2 GGUF file written with gguf's writer (it carries its own vocabulary)."""

import json

import pytest

from ffnlab.analysis.neurons import NeuronStats
from ffnlab.cli import main

from gguf_tiny import write_gguf
from hf_tiny import F, L, tiny_hf


@pytest.fixture(scope="module")
def gguf_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen2")
    return write_gguf(tiny_hf("qwen2"), root / "tiny-qwen2.gguf")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FFNLAB_CACHE", str(tmp_path_factory.getbasetemp() / "ffnlab-cache"))


def test_memories_and_neuron(gguf_model, tmp_path, capsys):
    assert main(["memories", str(gguf_model), "--tokens", "256", "--seq-len", "16", "--k", "3",
                 "--results", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "note: tiny-qwen2: weights are dequantised F16 GGUF values" in out
    stats = NeuronStats.load(next((tmp_path / "neurons").glob("tiny-qwen2-*")))
    assert stats.count == 256 and len(stats.layers) == L and stats.layers[0].top_values.shape == (F, 3)
    assert main(["neuron", str(gguf_model), "1", "5", "--results", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    mean = float(stats.layers[1].mean[5])
    assert f"tiny-qwen2 layer 1 neuron 5: mean {mean:.4f}" in out  # the statistics memories stored
    assert len(out.split("value promotes (when it fires as above):")[1].splitlines()[0].split(" | ")) == 10


def test_trace_with_a_prompt(gguf_model, tmp_path, capsys):
    assert main(["trace", str(gguf_model), "--prompt", "abcdefg", "--subject", "bcd", "--samples", "2",
                 "--results", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "total effect" in out and "mlp: indirect effect" in out


def test_params_of_a_gguf_file_reads_no_tensors(gguf_model, capsys):
    assert main(["params", str(gguf_model), "--json", "--seq-lens", "8"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["architecture"] == "qwen2" and r["total"] == tiny_hf("qwen2").num_parameters()
