"""Parameter and FLOP accounting (claim C5), checked against arithmetic done by hand."""

import pytest

from ffnlab.analysis.accounting import account_config, crossover_length, flops_per_token
from ffnlab.model import FFNConfig, preset


def test_bert_base_shares():
    acc = account_config(preset("bert-base"))
    assert acc.total == 109_482_240
    assert acc.components["ffn"] == 12 * (2 * 768 * 3072 + 3072 + 768) == 56_669_184
    assert acc.share("ffn") == pytest.approx(0.5176, abs=1e-4)  # 51.8% of all parameters


def test_gpt2_small_shares():
    acc = account_config(preset("gpt2-small"))
    assert acc.total == 124_439_808
    assert acc.share("ffn") == pytest.approx(0.4554, abs=1e-4)  # 45.5% (STUDY: 45.6%)
    assert acc.components["embeddings"] == 50257 * 768 + 1024 * 768


def test_flops_and_crossover_by_hand():
    cfg = preset("gpt2-small")
    f = flops_per_token(cfg, 1000)
    assert f["ffn"] == 2 * 12 * 2 * 768 * 3072
    assert f["attention_proj"] == 2 * 12 * 4 * 768 * 768
    assert f["attention_scores"] == 4 * 768 * (1000 + 1) / 2 * 12
    # causal: 8D^2 + 4D(T+1)/2 > 4DF  <=>  T + 1 > 2F - 4D = 3072
    assert crossover_length(cfg) == 3072
    assert crossover_length(cfg, include_projections=False) == 6144
    bert = preset("bert-base")  # bidirectional: 8D^2 + 4DT > 4DF <=> T > F - 2D = 1536
    assert crossover_length(bert) == 1537


def test_moe_counts_active_experts_only():
    cfg = preset("tiny", ffn=FFNConfig(kind="moe", n_experts=8, top_k=2, ratio=1.0))
    f = flops_per_token(cfg, 64)
    per_expert = 2 * 64 * 64
    assert f["ffn"] == 2 * 2 * (64 * 8 + 2 * per_expert)  # router + top-2 experts, 2 layers
    assert account_config(cfg).components["ffn"] == 2 * (64 * 8 + 8 * (per_expert + 64 + 64))


def test_no_ffn_has_no_crossover():
    assert crossover_length(preset("tiny", ffn=FFNConfig(kind="none"))) is None
