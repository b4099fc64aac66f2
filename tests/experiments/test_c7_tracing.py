"""c7-fact-tracing: each outcome of its criterion from plausible synthetic records, and `measure` on a
hand-built model whose fact sits in a known component."""

import sys
from pathlib import Path

import pytest

from ffnlab.analysis.tracing import FactPrompt
from ffnlab.experiments.c7_tracing import QUICK, measure, summarise
from ffnlab.results import base_verdict

sys.path.insert(0, str(Path(__file__).parents[1] / "analysis"))
from fact_models import ANSWERS, SUBJECT_POS, FactModel, prompt  # noqa: E402

L, WINDOW = 6, 2  # windows without layer 0: centres 2..5


def record(drop_mlp, drop_attn, mlp_peak=2, total=0.3):
    resid = [0.25] * L
    mlp = [0.02] * L
    mlp[0] = 0.2  # the first FFN re-encoding the noised token: reported apart, never the peak
    mlp[mlp_peak] = 0.1
    curves = {"resid @ last subject": resid, "mlp @ last subject": mlp, "attn @ last subject": [0.01] * L,
              "resid @ last": [0.0] * (L - 1) + [total], "mlp @ last": [0.01] * L, "attn @ last": [0.05] * L,
              "resid-sever-mlp @ last subject": [r - drop_mlp for r in resid],
              "resid-sever-attn @ last subject": [r - drop_attn for r in resid]}
    return {"fact": "f", "p_clean": 0.5, "p_corrupt": 0.5 - total, "total": total, "curves": curves,
            "extraction": {"attn from subject": [-0.1] * L, "attn from non-subject": [0.0] * L,
                           "ffn at last": [-0.2] * L}}


def verdict(records):
    """The verdict without the few-facts label (see the test of that label), and the findings."""
    r = summarise(records, QUICK, L, WINDOW, known=len(records), shipped=10, mode="quick")
    return base_verdict(r.verdict), r


def test_mlp_severing_costs_more_than_attention_severing_is_supported():
    v, r = verdict([record(0.1 + 0.01 * i, 0.01) for i in range(12)])
    assert v == r.verdict == "supported"  # 12 facts: no label
    assert r.estimates[0].mean == pytest.approx(0.1 + 0.055 - 0.01)
    assert r.extra["mlp_peak_layer"] == 2  # layer 0's larger value is not the peak
    assert "12 facts, bootstrap" in r.reason


def test_fewer_than_ten_facts_give_an_indicative_verdict():
    _, r = verdict([record(0.1 + 0.01 * i, 0.01) for i in range(8)])
    assert r.verdict == "indicative: supported" and "indicative: 8 facts" in r.reason


def test_a_mixed_sign_contrast_is_partly_supported():
    v, r = verdict([record(d, 0.0) for d in (0.2, -0.15, 0.1, -0.1, 0.05, -0.05)])
    assert r.estimates[0].ci_low < 0 < r.estimates[0].mean
    assert v == "partly supported"


def test_a_late_mlp_peak_fails_the_requirement():
    v, r = verdict([record(0.1, 0.0, mlp_peak=5) for _ in range(6)])
    assert v == "partly supported" and "peaks at layer 5" in r.reason


def test_no_total_effect_fails_the_requirement():
    v, r = verdict([record(0.1, 0.0, total=0.01) for _ in range(6)])
    assert v == "partly supported" and "total effect" in r.reason


def test_attention_severing_costing_more_is_not_supported():
    v, _ = verdict([record(0.01, 0.1 + 0.01 * i) for i in range(6)])
    assert v == "not supported"


def test_measure_on_a_model_whose_fact_sits_in_its_mlp():
    model = FactModel("mlp").eval()
    facts = [FactPrompt(f"fact {k}", tuple(prompt(k).tolist()), (SUBJECT_POS, SUBJECT_POS + 1), ANSWERS[k])
             for k in range(2)]
    records = measure(model, facts, 3.0, QUICK)
    for r in records:
        c = r["curves"]
        assert r["total"] > 0.3  # two noise samples: one may leave the subject recognisable
        assert c["resid @ last subject"][0] == pytest.approx(r["total"], abs=1e-5)
        assert c["resid-sever-mlp @ last subject"][0] == pytest.approx(0, abs=1e-5)
        assert c["resid-sever-attn @ last subject"][0] == pytest.approx(r["total"], abs=1e-5)
        assert r["extraction"]["attn from subject"][2] < -0.9  # layer 2 moves the attribute
    res = summarise(records, QUICK, 3, 1, 2, 2, "quick")
    assert res.config["known"] == 2 and len(res.series) == 3


def test_the_bootstrap_over_facts_is_a_percentile_interval_of_the_mean():
    from ffnlab.analysis.bootstrap import bootstrap_mean as bootstrap

    assert bootstrap([0.3] * 5, 200) == pytest.approx((0.3, 0.3, 0.3))
    values = [0.0, 1.0] * 20  # mean 0.5, standard error 0.079: the interval is about 0.5 ± 0.155
    mean, lo, hi = bootstrap(values, 4000)
    assert mean == pytest.approx(0.5) and 0.3 < lo < 0.4 and 0.6 < hi < 0.7
