from ffnlab.experiments.c8_recall import MODELS, PARTIAL, RECALL, SOLVED, recall_models, recall_verdict
from ffnlab.experiments.tasks import RecallTask
from ffnlab.model import count_params
from ffnlab.results import INCONCLUSIVE, base_verdict


def test_each_verdict_of_the_recall_criterion_is_reachable():
    assert recall_verdict([0.97, 0.98, 0.99], 0.98)[0] == "supported"
    assert recall_verdict([0.99, 0.80, 1.0], 0.93)[0] == "partly supported"  # mean clears, interval does not
    assert recall_verdict([0.6, 0.7, 0.65], 0.95)[0] == "partly supported"  # learned it, unreliably
    assert recall_verdict([0.1, 0.2, 0.15], 0.95)[0] == "not supported"  # only the model with FFN solves it
    verdict, reason, _ = recall_verdict([0.3, 0.35, 0.3], 0.5)
    assert verdict == INCONCLUSIVE and "no model solved" in reason  # nobody learned the task
    assert PARTIAL < SOLVED


def test_recall_models_match_parameters():
    r = RECALL["quick"]
    task = RecallTask(n_keys=r.n_keys, n_values=r.n_keys, n_pairs=r.n_pairs, n_queries=r.n_queries)
    cfgs = recall_models(r, task.vocab_size)
    a, b = (count_params(cfgs[k]) for k in MODELS)
    assert abs(a - b) / a < 0.1 and cfgs[MODELS[1]].ffn.kind == "none" and cfgs[MODELS[1]].d_model > r.d_model
    assert r.seq_len == 2 * r.n_pairs + 3 * r.n_queries  # the task's minimum: no padding to learn


def test_recall_at_test_size(run_test_size):
    res = run_test_size("in-context-recall")
    ladder, steps = res.config["ladder"], res.config["steps"]
    r = RECALL["test"]
    # the ladder stops at the first budget where a model solves recall, or runs to its end
    assert all(max(rung.values()) < SOLVED for rung in ladder[:-1])
    assert steps == r.budgets[len(ladder) - 1]
    assert len(ladder) == len(r.budgets) or max(ladder[-1].values()) >= SOLVED
    best = max(sum(v) / len(v) for v in res.config["accuracy"].values())
    if best < SOLVED:
        assert base_verdict(res.verdict) == INCONCLUSIVE
    else:
        assert base_verdict(res.verdict) in ("supported", "partly supported", "not supported")
    assert all(0 <= a <= 1 for v in res.config["accuracy"].values() for a in v)
