"""c7-knowledge-neurons: each outcome of its criterion from plausible per-fact numbers, and its method text."""

import pytest

from ffnlab.experiments.c7_neurons import QUICK, Fact, judge, matching_note, method_text, round_robin, unrelated_to
from ffnlab.results import INDICATIVE


def records(own, random, unrelated, n=12):
    """n facts with per-fact relative changes of p(answer) around the given means (spread +-0.02)."""
    spread = [(-1) ** i * 0.02 * (i % 3) for i in range(n)]
    return [{"fact": f"f{i}", "neurons": [[20, i]], "own": own + d, "random": random - d / 2,
             "unrelated": unrelated + d / 3} for i, d in enumerate(spread)]


def test_supported_when_own_neurons_beat_matched_random_and_are_specific():
    est, verdict, reason, used = judge(records(own=-0.5, random=-0.05, unrelated=-0.1))
    assert verdict == "supported" and used == 12
    assert est[0].mean == pytest.approx(0.45, abs=0.01) and est[0].ci_low > 0
    assert est[1].ci_low > 0 and "specificity" in reason


def test_partly_when_the_neurons_are_not_specific():
    """Generic output neurons: they lower every fact's answer as much as their own fact's."""
    est, verdict, reason, _ = judge(records(own=-0.5, random=-0.05, unrelated=-0.5))
    assert verdict == "partly supported" and "but not: specificity" in reason
    assert est[1].ci_low <= 0


def test_partly_when_only_the_mean_clears():
    rs = records(own=-0.1, random=-0.05, unrelated=0.0)
    rs[0]["random"] = -0.45  # one fact where the random neurons hurt far more
    est, verdict, _, _ = judge(rs)
    assert est[0].mean > 0 > est[0].ci_low
    assert verdict == "partly supported"


def test_not_supported_when_matched_random_neurons_do_as_much():
    est, verdict, reason, _ = judge(records(own=-0.2, random=-0.25, unrelated=0.0))
    assert verdict == "not supported" and est[0].ci_high < 0 and "misses > 0" in reason


def test_few_facts_make_it_indicative_and_no_kept_set_is_not_supported():
    _, verdict, reason, used = judge(records(own=-0.5, random=-0.05, unrelated=-0.1, n=4))
    assert verdict == INDICATIVE + "supported" and used == 4 and "indicative: 4 facts" in reason
    empty = [{**r, "neurons": []} for r in records(-0.5, 0.0, 0.0)]
    _, verdict, reason, used = judge(empty)
    assert verdict == "not supported" and used == 0


def test_unrelated_facts_have_another_answer_and_another_relation_when_possible():
    facts = [Fact("a", "capital", [], 1), Fact("b", "capital", [], 2), Fact("c", "language", [], 3),
             Fact("d", "language", [], 1), Fact("e", "sport", [], 5)]
    assert unrelated_to(facts, 0, 2) == [2, 4]  # not b (same relation) nor d (same answer)
    assert unrelated_to(facts, 0, 4) == [1, 2, 4]  # too few of other relations: any other answer


def test_method_text_follows_the_config():
    text = method_text("smollm2", QUICK, checked=5, n_facts=3)
    assert "3 of the 5 checked" in text and f"({QUICK.steps} path points" in text
    assert f"up to {QUICK.prompts} prompts" in text
    assert "Hase et al. 2023" in text and "Niu et al. 2024" in text


def test_round_robin_takes_one_fact_of_each_relation_in_turn():
    facts = [{"relation": r, "i": i} for i, r in enumerate("aaabbc")]
    assert [f["i"] for f in round_robin(facts)] == [0, 3, 5, 1, 4, 2]


def test_matching_note_reports_the_median_ratio_of_activations():
    rs = [{"neurons": [[1, 2]], "own_mean_abs": 4.0, "random_mean_abs": r} for r in (0.5, 4.0, 3.6)]
    assert "0.90 x" in matching_note(rs) and "range 0.12-1.00" in matching_note(rs)
    assert "No fact" in matching_note([{"neurons": [], "own_mean_abs": float("nan"), "random_mean_abs": 0.0}])
