"""C6's four questions: each its own verdict from the frontier's runs, each outcome reachable."""

import pytest

from ffnlab.experiments.c6_claims import QUESTIONS, prune_verdict, question_verdict
from ffnlab.experiments.c6_frontier import BASELINE, PRUNE, PRUNE_WAYS
from ffnlab.experiments.verdict import estimate
from ffnlab.store import Store


def seeds(*v):
    return estimate("q", v)


@pytest.mark.parametrize("primary, partial, expected", [
    ((0.01, 0.02, 0.015), (0.2, 0.3, 0.25), "supported"),         # within 0.05 nats, every seed
    ((0.04, 0.02, 0.06), None, "partly supported"),               # the mean clears 0.05, the interval does not
    ((0.3, 0.25, 0.35), (0.01, 0.02, 0.03), "partly supported"),  # only the lighter change is cheap
    ((0.3, 0.25, 0.35), (0.2, 0.3, 0.25), "not supported"),
])
def test_every_question_verdict_is_reachable(primary, partial, expected):
    for q in QUESTIONS.values():
        assert question_verdict(q, seeds(*primary), seeds(*partial) if partial else None)[0] == expected


@pytest.mark.parametrize("half, vs_random, third, expected", [
    ((0.01, 0.02, 0.015), (0.5, 0.4, 0.6), (0.0, 0.01, 0.0), "supported"),
    ((0.01, 0.02, 0.015), (-0.01, 0.0, -0.02), (0.0, 0.01, 0.0), "partly supported"),  # no better than random
    ((0.3, 0.4, 0.35), (0.5, 0.4, 0.6), (0.01, 0.02, 0.03), "partly supported"),       # 30% is cheap
    ((0.3, 0.4, 0.35), (0.5, 0.4, 0.6), (0.2, 0.25, 0.3), "not supported"),
])
def test_every_prune_verdict_is_reachable(half, vs_random, third, expected):
    assert prune_verdict(seeds(*half), seeds(*vs_random), seeds(*third))[0] == expected


def test_the_questions_reuse_the_frontiers_runs(run_test_size):
    run_test_size("efficiency-frontier")
    trained = len(Store(run_test_size.results).runs(kind="train"))
    results = {name: run_test_size(name) for name in ("c6-shrink", "c6-share", "c6-replace", "c6-prune")}
    assert len(Store(run_test_size.results).runs(kind="train")) == trained  # nothing trained again
    shrink = results["c6-shrink"]
    assert shrink.estimates[0].quantity == QUESTIONS["shrink"].criterion.quantity
    rows = {row[0]: row for row in shrink.tables[0].rows}
    assert rows[BASELINE][2] == 1.0 and rows["ratio 1"][2] == pytest.approx(0.25, abs=0.01)  # FFN share
    assert set(rows) == {BASELINE, "ratio 1", "ratio 2", "ratio 0.5", "ratio 8"}
    prune = results["c6-prune"]
    table = prune.tables[0].rows
    assert [row[0] for row in table] == list(PRUNE) and len(table[0]) == 1 + len(PRUNE_WAYS)
    assert table[0][1] == table[0][2] == table[0][3]  # nothing pruned: the same model three times
    assert all(r.criterion is not None and r.verdict for r in results.values())
