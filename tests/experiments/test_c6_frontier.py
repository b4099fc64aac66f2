import pytest

from ffnlab.analysis.accounting import flops_per_token
from ffnlab.experiments.c6_frontier import BASELINE, pareto, variants
from ffnlab.model import ModelConfig, count_params


def test_pareto_marks_only_undominated_points():
    points = {"a": (1, 5.0), "b": (2, 4.0), "c": (3, 4.5), "d": (2, 4.0), "e": (4, 3.0)}
    assert pareto(points) == {"a", "b", "d", "e"}  # c is beaten by b (fewer params, lower loss)


def test_variants_match_what_they_claim_to_match():
    cfgs = variants(ModelConfig(vocab_size=256, d_model=64, n_layers=4, n_heads=4))
    base = count_params(cfgs[BASELINE])
    assert abs(count_params(cfgs["swiglu (matched params)"]) - base) / base < 0.01
    assert abs(count_params(cfgs["one wide shared FFN (matched params)"]) - base) / base < 0.01
    ffn = lambda k: flops_per_token(cfgs[k], 64)["ffn"]  # noqa: E731
    for moe in ("moe top-1 (matched active)", "moe top-2 (matched active)"):
        assert abs(ffn(moe) - ffn(BASELINE)) / ffn(BASELINE) < 0.05  # active FLOPs match (router aside)


def test_frontier_at_test_size(run_test_size):
    r = run_test_size("efficiency-frontier")
    (variants_table,) = r.tables
    assert len(variants_table.rows) == 12 and r.verdict is None  # descriptive: the verdicts are c6_claims'
    assert any("params" in row[7] for row in variants_table.rows)  # something is on the parameter front
    assert all(row[5] <= row[4] <= row[6] for row in variants_table.rows)  # loss inside its interval
    assert len(r.estimates) == 11 and all(e.quantity.endswith("minus baseline") for e in r.estimates)


@pytest.mark.parametrize("size", ["quick", "full"])
def test_a_size_leaves_out_only_variants_no_verdict_needs(run_test_size, monkeypatch, size):
    from ffnlab.experiments import c6_claims, c6_frontier

    gone = c6_frontier.LEFT_OUT[size]
    monkeypatch.setattr(c6_frontier, "left_out", lambda ctx: gone)
    r = run_test_size("efficiency-frontier")
    names = {row[0] for row in r.tables[0].rows}
    assert len(names) == 12 - len(gone) and not names & set(gone)
    assert any("leaves out" in c for c in r.caveats)
    needed = {q.primary for q in c6_claims.QUESTIONS.values()} | {c6_frontier.BASELINE}
    assert not needed & set(gone)  # every question keeps its primary variant
    if size == "full":  # the full size keeps every partial condition too
        assert not {q.partial for q in c6_claims.QUESTIONS.values()} & set(gone)
