import math

import pytest

from ffnlab.experiments.c3_nonlinearity import c3_verdict, kept_share
from ffnlab.experiments.verdict import estimate
from ffnlab.store import Store


def test_nonlinearity_matches_parameters_and_reuses_training(run_test_size):
    r = run_test_size("nonlinearity")
    rows = {row[0]: row for row in r.tables[0].rows}
    params = {name: row[3] for name, row in rows.items()}
    assert params["linear FFN"] == params["gelu FFN"]
    for matched in ("no FFN (matched params, deeper)", "no FFN (matched params, wider)"):
        assert abs(params[matched] - params["gelu FFN"]) / params["gelu FFN"] < 0.1
    assert params["no FFN (same depth)"] < 0.7 * params["gelu FFN"]
    assert all(math.isfinite(row[4]) and row[4] < math.log(128) for row in rows.values())  # below uniform
    gap = rows["linear FFN"][4] - rows["gelu FFN"][4]
    assert abs(r.estimates[1].mean - gap) < 1e-9
    none, lin, gelu = (rows[k][4] for k in ("no FFN (same depth)", "linear FFN", "gelu FFN"))
    assert r.estimates[0].mean == pytest.approx((none - lin) / (none - gelu))
    for gated in ("swiglu", "reglu", "bilinear"):  # matched to the GELU FFN's parameters (gated width ~2/3)
        assert abs(params[f"{gated} (matched params)"] - params["gelu FFN"]) / params["gelu FFN"] < 0.01
    assert "rank of W_out W_in" in r.tables[0].note
    # eight models, plus a three-point learning-rate sweep for each FFN family (gated ones share one)
    sweeps = sorted(p.name.split("-")[0] for p in (run_test_size.results / "lr-sweeps").glob("*.json"))
    assert sweeps == ["gated", "linear", "mlp", "none"]
    # a rerun of the experiment trains nothing: every model comes from the run store
    runs_before = len(Store(run_test_size.results).runs(kind="train"))
    again = run_test_size("nonlinearity", reuse=False)
    assert len(Store(run_test_size.results).runs(kind="train")) == runs_before == 8 + 4 * 3
    assert again.estimates[0].per_seed == r.estimates[0].per_seed
    # test-size models are far from the n-gram bar: the numbers are kept, the verdict is withheld
    assert r.verdict == "inconclusive (under-trained)" and "miss their bar" in r.reason
    assert r.extra["verdict_if_trained"]["verdict"].startswith("indicative: ")
    assert [q["name"] for q in r.training] == [f"c3 {name} s0" for name in rows]
    assert [q["name"] for q in r.training if not q["in_verdict"]] == [f"c3 {g} (matched params) s0"
                                                                       for g in ("swiglu", "reglu", "bilinear")]
    assert all(q["gap"] == q["best_ngram"] - q["test_loss"] and not q["meets"] for q in r.training)
    # the GELU model is the reference (the size's bar); every other variant is compared with it (bar 0)
    assert {q["name"]: (q["comparison"], q["bar"]) for q in r.training}["c3 gelu FFN s0"] == (False, 0.2)
    assert all(q["comparison"] and q["bar"] == 0.0 for q in r.training if q["name"] != "c3 gelu FFN s0")


def test_each_experiment_run_is_logged_in_the_store(run_test_size):
    r = run_test_size("nonlinearity")
    runs = Store(run_test_size.results).runs(kind="experiment")
    assert [x.name for x in runs] == ["nonlinearity"]
    assert runs[0].summary["verdict"] == r.verdict
    assert runs[0].summary["estimates"][r.criterion.quantity] == r.estimates[0].mean


@pytest.mark.parametrize("share, cost, expected", [
    ((0.2, 0.25, 0.3), (0.10, 0.12, 0.11), "supported"),         # keeps a quarter of the gain, costs 0.1 nats
    ((0.2, 0.25, 0.3), (0.00, 0.01, -0.01), "partly supported"),  # keeps little, yet costs nothing measurable
    ((0.85, 0.9, 0.88), (0.05, 0.06, 0.055), "partly supported"), # keeps most of the gain, costs 0.05 nats
    ((0.95, 0.9, 1.0), (0.0, 0.005, -0.003), "not supported"),    # the activation does nothing measurable
])
def test_every_verdict_is_reachable(share, cost, expected):
    assert c3_verdict(estimate("share", share), estimate("cost", cost))[0] == expected


def test_kept_share_leaves_out_seeds_where_the_ffn_gains_nothing():
    assert kept_share([3.0, 2.0], [2.5, 2.1], [2.0, 2.2]) == [0.5]


@pytest.mark.parametrize("mode, gated", [("quick", ["swiglu"]), ("full", ["swiglu", "bilinear"]),
                                         ("test", ["swiglu", "reglu", "bilinear"])])
def test_each_size_trains_its_gated_variants(mode, gated):
    from pathlib import Path

    from ffnlab.experiments.c3_nonlinearity import MATCHED, variants
    from ffnlab.experiments.registry import Context

    ctx = Context(mode=mode if mode != "test" else "quick", seeds=(0,), results=Path("unused"),
                  options={"size": "test"} if mode == "test" else {})
    names = [n.split()[0] for n in variants(ctx, 128) if "(matched params)" in n and n not in MATCHED]
    assert names == gated
