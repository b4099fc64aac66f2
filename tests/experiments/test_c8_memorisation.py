import pytest
import torch

from ffnlab.errors import FFNLabError
from ffnlab.experiments.tasks import IGNORE, IS, QUERY, FactTask, Mixture, RecallTask


def test_fact_task_follows_the_data_protocol():
    task = FactTask(n_entities=30, n_attributes=5, weights=(1, 10), seed=3)
    x, y = task.batch("train", 4, 6, 32, 0)
    assert x.shape == y.shape == (6, 32)
    x2, y2 = task.batch("train", 4, 6, 32, 0)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # a pure function of its arguments
    answer = {f.entity: f.attribute for f in task.facts}
    mask = y != IGNORE
    assert mask.sum() == 6 * 8
    # every target is the attribute of the entity two positions back, predicted at IS
    assert (x[mask] == IS).all()
    ents = x.roll(1, dims=1)[mask]
    assert all(answer[int(e)] == int(a) for e, a in zip(ents, y[mask]))
    assert int(x.max()) < task.vocab_size and int(y[mask].max()) < task.vocab_size
    heavy = task.exposures(10_000)
    assert abs(heavy[10] / heavy[1] - 10) < 1e-9


def test_frequent_facts_are_drawn_more_often():
    task = FactTask(n_entities=20, n_attributes=4, weights=(1, 16))
    x, _ = task.batch("train", 0, 64, 64, 0)
    weight = {f.entity: f.weight for f in task.facts}
    ents = [int(e) for e in x[:, ::4].flatten()]
    assert sum(weight[e] == 16 for e in ents) > 8 * sum(weight[e] == 1 for e in ents)


def test_recall_answers_are_in_the_context():
    task = RecallTask(n_keys=10, n_values=10, n_pairs=5, n_queries=3, offset=7)
    x, y = task.batch("val", 0, 4, 32, 1)
    for b in range(4):
        pairs = {int(x[b, i]): int(x[b, i + 1]) for i in range(0, 10, 2)}
        for t in (y[b] != IGNORE).nonzero().flatten().tolist():
            assert int(x[b, t - 1]) == QUERY and pairs[int(x[b, t])] == int(y[b, t])
    mix = Mixture(FactTask(20, 4), task)
    mx, my = mix.batch("train", 0, 5, 32, 0)
    assert mx.shape == (5, 32) and mix.vocab_size == max(task.vocab_size, FactTask(20, 4).vocab_size)


def test_recall_queries_are_drawn_with_replacement():
    # drawn without replacement, the last of as many queries as pairs would be answered by elimination
    def asked(task: RecallTask) -> list[list[int]]:
        x, y = task.batch("train", 0, 64, 2 * task.n_pairs + 3 * task.n_queries, 0)
        return [[int(x[b, t]) for t in (y[b] != IGNORE).nonzero().flatten().tolist()] for b in range(64)]

    assert all(len(a) == 6 for a in asked(RecallTask(n_keys=8, n_pairs=3, n_queries=6)))  # each answer supervised
    as_many = asked(RecallTask(n_keys=8, n_pairs=4, n_queries=4))
    assert any(len(set(a)) < 4 for a in as_many)  # a key asked twice: nothing is left to eliminate
    with pytest.raises(FFNLabError, match="n_queries >= 1"):
        RecallTask(n_pairs=2, n_queries=0)
