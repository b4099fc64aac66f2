import math

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
    assert abs(r.estimates[0].mean - gap) < 1e-9
    # five models, plus a three-point learning-rate sweep for each of the three FFN families (mlp, linear, none)
    sweeps = sorted(p.name.split("-")[0] for p in (run_test_size.results / "lr-sweeps").glob("*.json"))
    assert sweeps == ["linear", "mlp", "none"]
    # a rerun of the experiment trains nothing: every model comes from the run store
    runs_before = len(Store(run_test_size.results).runs(kind="train"))
    again = run_test_size("nonlinearity", reuse=False)
    assert len(Store(run_test_size.results).runs(kind="train")) == runs_before == 5 + 3 * 3
    assert again.estimates[0].per_seed == r.estimates[0].per_seed
    # test-size models are far from the n-gram bar: the numbers are kept, the verdict is withheld
    assert r.verdict == "inconclusive (under-trained)" and "miss their bar" in r.reason
    assert r.extra["verdict_if_trained"]["verdict"].startswith("indicative: ")
    assert [q["name"] for q in r.training] == [f"c3 {name} s0" for name in rows]
    assert all(q["gap"] == q["best_ngram"] - q["test_loss"] and not q["meets"] for q in r.training)


def test_each_experiment_run_is_logged_in_the_store(run_test_size):
    r = run_test_size("nonlinearity")
    runs = Store(run_test_size.results).runs(kind="experiment")
    assert [x.name for x in runs] == ["nonlinearity"]
    assert runs[0].summary["verdict"] == r.verdict
    assert runs[0].summary["estimates"][r.criterion.quantity] == r.estimates[0].mean
