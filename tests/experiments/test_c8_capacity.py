import math
from collections import Counter

import pytest
import torch

from ffnlab.errors import FFNLabError
from ffnlab.experiments.c8_memorisation import (CAPACITY, MODELS, RATIO, capacity_models, capacity_verdict,
                                                fact_prompt)
from ffnlab.experiments.capacity import (answers, capacity, fact_bits, in_band, known_facts, loss_bits, plateaued,
                                         non_embedding_params)
from ffnlab.experiments.capacity_task import IGNORE, IS, CapacityFacts
from ffnlab.experiments.verdict import estimate
from ffnlab.model import ModelConfig, count_params
from ffnlab.results import INCONCLUSIVE, base_verdict


def test_bits_formula_by_hand():
    assert fact_bits(10, 1.0, 16) == pytest.approx(40.0)  # every fact known: N log2 A
    assert fact_bits(100, 1 / 16, 16) == 0.0 and fact_bits(100, 0.01, 16) == 0.0  # chance and below: nothing
    assert fact_bits(100, 0.9, 2) == pytest.approx(100 * (1 - 0.4689955935892812))  # 1 - h(0.9) per fact
    assert fact_bits(8, 0.5, 4) == pytest.approx(8 * (2 - 1 - 0.5 * math.log2(3)))
    assert known_facts(192, 96 / 192 + (96 / 192) / 16, 16) == pytest.approx(96)  # knows 96, guesses 96
    assert loss_bits(50, math.log(8), 8) == pytest.approx(0.0)  # uniform prediction holds no bits
    assert loss_bits(50, 0.0, 8) == pytest.approx(150.0)
    accs = [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]  # more accuracy, more bits
    assert all(fact_bits(10, a, 8) < fact_bits(10, b, 8) for a, b in zip(accs, accs[1:]))


def test_every_fact_is_seen_exactly_exposures_times():
    task = CapacityFacts(40, n_attributes=5, entity_tokens=2, alphabet=8, seed=1)
    batch_size, seq_len, exposures = 3, 16, 6  # 4 statements per row, 12 per batch
    steps = task.steps_for(exposures, batch_size, seq_len)
    assert steps == math.ceil(6 * 40 / 12)
    seen: Counter = Counter()
    attribute = {tuple(e): int(a) for e, a in zip(task.entities.tolist(), task.attributes)}
    for step in range(steps):
        x, y = task.batch("train", step, batch_size, seq_len, 0)
        mask = y != IGNORE
        assert mask.sum() == 12 and (x[mask] == IS).all()
        for b, t in mask.nonzero().tolist():
            entity = tuple(x[b, t - 2:t].tolist())
            assert attribute[entity] == int(y[b, t])  # the target is the attribute of the two tokens before IS
            seen[entity] += 1
    assert set(seen.values()) == {exposures} and len(seen) == 40
    x2, _ = task.batch("train", 3, batch_size, seq_len, 0)
    assert torch.equal(task.batch("train", 3, batch_size, seq_len, 0)[0], x2)  # a pure function of its arguments


def test_entities_share_their_tokens():
    task = CapacityFacts(200, n_attributes=8, entity_tokens=2, alphabet=16)
    assert len({tuple(e) for e in task.entities.tolist()}) == 200  # distinct entities
    per_token = Counter(int(t) for t in task.entities.flatten())
    assert min(per_token.values()) >= 5  # no token names one entity: no embedding can hold one fact
    with pytest.raises(FFNLabError):
        CapacityFacts(300, entity_tokens=2, alphabet=16)


class Lookup(torch.nn.Module):
    """A hand-sized memory: answers the first `known` facts of `task`, a fixed pseudo-random attribute
    for every other entity. Its capacity is exactly known * log2 A bits."""

    def __init__(self, task: CapacityFacts, known: int, seed: int):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        g = torch.Generator().manual_seed(seed)
        guess = torch.randint(0, task.n_attributes, (task.n_facts,), generator=g) + task.first_attribute
        guess[:known] = torch.from_numpy(task.attributes[:known])
        self.table = {tuple(e): int(a) for e, a in zip(task.entities.tolist(), guess)}
        self.vocab = task.vocab_size

    def forward(self, tokens):
        out = torch.zeros(*tokens.shape, self.vocab)
        for b, row in enumerate(tokens.tolist()):
            out[b, -1, self.table[tuple(row[:2])]] = 1.0
        return out


def test_capacity_sweep_finds_a_lookup_models_capacity():
    known, n_attr = 96, 16
    truth = known * math.log2(n_attr)
    per_seed = []
    for seed in range(4):
        points = []
        for n in (24, 48, 96, 192, 384):
            task = CapacityFacts(n, n_attr, 2, 32, seed=0)
            correct, _ = answers(Lookup(task, min(known, n), seed), task)
            points.append((n, float(correct.float().mean())))
        assert all(fact_bits(n, a, n_attr) <= truth + 1e-9 for n, a in points)  # never counts more than it holds
        bits, at = capacity(points, n_attr)
        assert at == known and in_band(points) and plateaued(points, n_attr)  # full: knows as many at 192
        per_seed.append(bits)
    e = estimate("capacity", per_seed)
    assert e.ci_low <= truth <= e.ci_high


def test_capacity_of_a_synthetic_curve_is_found_within_its_interval():
    # a model that stores C bits: accuracy 1 until N log2 A = C, then the accuracy whose Fano bits are C
    n_attr, cap = 32, 3000.0
    gen = torch.Generator().manual_seed(0)

    def accuracy(n: int) -> float:
        if n * math.log2(n_attr) <= cap:
            return 1.0
        lo, hi = 1 / n_attr, 1.0
        for _ in range(60):  # fact_bits grows with accuracy above chance: bisect for the level C
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if fact_bits(n, mid, n_attr) < cap else (lo, mid)
        return lo

    per_seed = []
    for _ in range(5):
        noisy = [(n, min(1.0, max(0.0, accuracy(n) + 0.01 * float(torch.randn(1, generator=gen)))))
                 for n in (128, 256, 512, 1024, 2048)]
        per_seed.append(capacity(noisy, n_attr)[0])
    e = estimate("capacity", per_seed)
    assert e.ci_low <= cap <= e.ci_high and e.ci_high - e.ci_low < 0.15 * cap


def test_each_verdict_of_the_capacity_criterion_is_reachable():
    assert capacity_verdict([1.6, 1.7, 1.65], True, True)[0] == "supported"
    assert capacity_verdict([1.6, 1.7, 1.65], False, True)[0] == "partly supported"  # the sweeps missed the band
    assert capacity_verdict([1.6, 1.7, 1.65], True, False)[0] == INCONCLUSIVE  # a sweep did not plateau
    reason = capacity_verdict([1.6, 1.7, 1.65], True, False, ["without FFN seed 2 (...)"], "X would decide it")[1]
    assert "chance): without FFN seed 2 (...), so the peaks" in reason
    assert "not capacity; X would decide it. Read as if measured: supported" in reason


def test_a_sweep_that_did_not_plateau_says_why_and_what_would_decide_it():
    from ffnlab.experiments.c8_memorisation import why_not_full

    def pt(n, acc, tried=(1e-2,)):
        return {"n": n, "accuracy": acc, "bits": fact_bits(n, acc, 32), "lr": tried[-1], "tried": list(tried)}
    rising = [pt(512, 1.0), pt(1024, 1.0), pt(2048, 0.9)]  # most bits at the largest N: maybe not full yet
    text, decide = why_not_full("m seed 0", rising, 32)
    assert text == "m seed 0 (most bits at its largest N, 2048)" and "larger N" in decide
    fell = [pt(1024, 1.0), pt(2048, 0.9), pt(4096, 0.2, (1e-2, 3e-3, 3e-2))]  # known facts fell after the peak
    text, decide = why_not_full("m seed 1", fell, 32)
    share = known_facts(4096, 0.2, 32) / known_facts(2048, 0.9, 32)
    assert text == f"m seed 1 (knows {share:.0%} as many facts at N=4096 as at 2048, at the best of lr 0.01, " \
                   "0.003, 0.03)" and "more exposures" in decide
    assert capacity_verdict([1.0, 2.2, 1.3], True, True)[0] == "partly supported"  # mean clears, interval does not
    assert capacity_verdict([1.12, 1.15, 1.1], True, True)[0] == "partly supported"  # above 1, below the threshold
    assert capacity_verdict([0.9, 1.05, 1.0], True, True)[0] == "not supported"  # as Allen-Zhu & Li: no difference
    assert capacity_verdict([0.5, 0.6, 0.55], True, True)[0] == "not supported"
    assert RATIO > 1
    assert not plateaued([(256, 0.43), (512, 0.42)], 32)  # bits still growing at the largest N: not full yet
    assert plateaued([(256, 0.85), (512, 0.54)], 32) and not plateaued([(512, 0.5)], 32)
    assert not plateaued([(256, 0.97), (512, 0.78), (1024, 0.15)], 32)  # collapse after the peak: training


def test_no_ffn_models_match_parameters():
    cap = CAPACITY["full"]
    cfgs = capacity_models(cap, CapacityFacts(256, cap.n_attributes, 2, cap.alphabet).vocab_size)
    total, inner = count_params(cfgs[MODELS[0]]), non_embedding_params(cfgs[MODELS[0]])
    assert abs(count_params(cfgs[MODELS[1]]) - total) / total < 0.15
    assert abs(non_embedding_params(cfgs[MODELS[2]]) - inner) / inner < 0.15
    assert all(c.ffn.kind == "none" for k, c in cfgs.items() if k != MODELS[0])
    cfg = ModelConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, positions="rotary")
    assert count_params(cfg) - non_embedding_params(cfg) == 50 * 16  # tied head: one embedding matrix


def test_fact_prompt_is_a_training_row_prefix():
    task = CapacityFacts(30, 4, 2, 8)
    p = fact_prompt(task, 3)
    assert p.tokens[:4] == (*task.entities[4].tolist(), IS, int(task.attributes[4]))
    assert p.tokens[4:] == (*task.entities[3].tolist(), IS) and p.answer == int(task.attributes[3])
    assert p.subject == (4, 6)


def test_memorisation_at_test_size(run_test_size):
    r = run_test_size("memorisation")
    cap = CAPACITY["test"]
    points = r.tables[1].rows
    assert {row[0] for row in points} == set(MODELS)
    for model, _, n, lr, tried, acc, bits, _ in points:
        assert 0 <= acc <= 1 and bits == pytest.approx(fact_bits(n, acc, cap.n_attributes))
        assert n in cap.grid and lr in cap.lrs  # the test size adds no points (extend 0)
        assert tried == ", ".join(f"{x:g}" for x in cap.lrs)  # no retry rates at the test size
    for row in r.tables[0].rows:
        best = max(b for m, _, _, _, _, _, b, _ in points if m == row[0])
        assert row[5] == pytest.approx(best) and row[6] == pytest.approx(best / row[3])
    assert base_verdict(r.verdict) in ("supported", "partly supported", "not supported", INCONCLUSIVE)
    from ffnlab.store import Store
    trained = len(Store(run_test_size.results).runs(kind="train"))
    assert trained <= len(MODELS) * len(cap.grid)  # identical widths are trained once
    t = run_test_size("memorisation-tracing")
    assert len(Store(run_test_size.results).runs(kind="train")) == trained  # tracing reuses the capacity runs
    if t.config["known"][0]:
        assert all(-1.0 <= row[2] / 100 <= 1.0 for row in t.tables[0].rows)


def test_a_point_whose_known_facts_collapse_is_retried_at_other_rates_and_only_that_point(monkeypatch):
    import dataclasses
    import types

    from ffnlab.experiments import c8_memorisation as c8

    # scripted accuracies by (N, lr): the 4096-fact set is not learned at 1e-2 but is at 3e-3
    acc = {(512, 1e-2): 1.0, (1024, 1e-2): 0.9, (2048, 1e-2): 0.6, (4096, 1e-2): 0.05, (4096, 3e-3): 0.32,
           (4096, 3e-2): 0.2}
    trained = []

    def fake_fit(ctx, cap, cfg, name, n, seed, lr):
        trained.append((n, lr))
        return types.SimpleNamespace(model=(n, lr))

    def fake_answers(model, task):
        n = task.n_facts
        k = round(acc[model] * n)
        return torch.arange(n) < k, torch.full((n,), 1.0)

    monkeypatch.setattr(c8, "fit_facts", fake_fit)
    monkeypatch.setattr(c8, "answers", fake_answers)
    cap = dataclasses.replace(CAPACITY["quick"], grid=(512, 1024, 2048), extend=1, lrs=(1e-2,),
                              retry_lrs=(3e-3, 3e-2))
    points = c8.sweep(None, cap, None, MODELS[0], 0)
    assert [p["n"] for p in points] == [512, 1024, 2048, 4096]  # 2048 stores the most bits: 4096 is added
    assert trained == [(512, 1e-2), (1024, 1e-2), (2048, 1e-2), (4096, 1e-2), (4096, 3e-3), (4096, 3e-2)]
    last = points[-1]
    assert last["lr"] == 3e-3 and last["tried"] == [1e-2, 3e-3, 3e-2]
    assert last["accuracy"] == pytest.approx(0.32, abs=1e-3)
    assert all(p["tried"] == [1e-2] for p in points[:3])  # 1024 knows more than 75% of 512's facts: no retry
    # 0.32 of 4096 is more facts than 0.6 of 2048 beyond chance: the retried sweep is full there
    assert plateaued([(p["n"], p["accuracy"]) for p in points], cap.n_attributes, c8.KEEP)
    trained.clear()
    c8.sweep(None, dataclasses.replace(cap, retry_lrs=()), None, MODELS[0], 0)
    assert (4096, 3e-3) not in trained  # without retry rates, the collapse stands
    # a halving adds 256 below the grid: 512 (under the band, fewer facts than 256 knows) is retried then
    acc.update({(256, 1e-2): 0.9, (512, 1e-2): 0.1, (512, 3e-3): 0.95, (512, 3e-2): 0.1, (1024, 1e-2): 0.06,
                (2048, 1e-2): 0.045})  # no grid point collapsed from the one below it
    trained.clear()
    points = c8.sweep(None, dataclasses.replace(cap, extend=1), None, MODELS[0], 0)
    assert trained[-3:] == [(256, 1e-2), (512, 3e-3), (512, 3e-2)] and [p["n"] for p in points][0] == 256
    assert points[1]["lr"] == 3e-3 and points[1]["tried"] == [1e-2, 3e-3, 3e-2]
