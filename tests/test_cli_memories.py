"""`ffnlab memories`, `ffnlab neuron` and `ffnlab trace` on the packaged SmolLM2, end to end."""

import re
import subprocess
import sys

import pytest

from ffnlab.analysis.neurons import NeuronStats
from ffnlab.cli import main
from ffnlab.store import Store


def ffnlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ffnlab", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """One `ffnlab memories` pass over 512 tokens, shared by the tests below."""
    root = tmp_path_factory.mktemp("results")
    assert main(["memories", "smollm2", "--tokens", "512", "--seq-len", "64", "--k", "5",
                 "--results", str(root)]) == 0
    return root


def test_memories_writes_statistics_and_a_store_run(results, capsys):
    stats = NeuronStats.load(next((results / "neurons").glob("*-512")))
    assert stats.count == 512 and len(stats.layers) == 30
    assert all(layer.top_values.shape == (1536, 5) for layer in stats.layers)
    (run,) = Store(results).runs(kind="memories")
    assert run.status == "finished" and len(run.summary["agree_by_layer"]) == 30
    assert all(0.0 <= a <= 1.0 for a in run.summary["agree_by_layer"])


def test_neuron_shows_the_stored_triggers_marked(results, capsys):
    assert main(["neuron", "smollm2", "3", "17", "-n", "3", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    stats = NeuronStats.load(next((results / "neurons").glob("*-512")))
    shown = [float(v) for v in re.findall(r"^\s+([+-]\d+\.\d+)\s", out, flags=re.M)]
    stored = stats.layers[3].top_values[17, :3].tolist()
    assert shown == pytest.approx(stored, abs=5e-4)  # printed with 3 decimals
    assert out.count("[[") == 3 and "value promotes" in out and "value suppresses" in out
    assert Store(results).runs(kind="neuron")[0].summary["mean"] == pytest.approx(
        float(stats.layers[3].mean[17]), abs=1e-9)


def test_trace_a_given_prompt(results, capsys):
    assert main(["trace", "smollm2", "--prompt", "The Eiffel Tower is in the city of", "--subject",
                 "The Eiffel Tower", "--samples", "2", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "total effect" in out
    for kind in ("resid", "mlp", "attn"):
        assert f"{kind}: indirect effect" in out
    (run,) = Store(results).runs(kind="trace")
    fact = run.summary["facts"][0]
    # an indirect effect is a difference of two probabilities
    assert all(-1.0 <= fact[f"peak_{k}"] <= 1.0 for k in ("resid", "mlp", "attn"))


@pytest.mark.parametrize("args, words", [
    (["neuron", "smollm2", "30", "0"], "layer 30 out of range; smollm2 has layers 0..29"),
    (["neuron", "smollm2", "0", "1536"], "neuron 1536 out of range"),
    (["memories", "smollm2", "--tokens", "0"], "--tokens must be a positive integer"),
    (["trace", "smollm2", "--prompt", "Paris is nice"], "--prompt and --subject go together"),
])
def test_bad_input_is_one_line(args, words, tmp_path):
    out = ffnlab(*args, "--results", str(tmp_path))
    assert out.returncode == 2, out.stderr
    assert words in out.stderr and "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip() and not re.search(r"\d+%\|", line)]
    assert len(lines) == 1, out.stderr  # progress bars (a first load converts the GGUF file) aside
