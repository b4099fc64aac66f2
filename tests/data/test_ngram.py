"""N-gram baselines: hand-computed probabilities on a five-token corpus, normalisation, and
smoothing weights chosen on validation only."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from ffnlab.data.ngram import KneserNey, fit_baselines, ngram_baselines

TRAIN = np.array([0, 1, 0, 1, 2])  # bigrams 01 x2, 10, 12; trigrams 010, 101, 012
TEST = np.array([0, 1, 2, 0])  # predicts 1 | 0, 2 | 0 1, 0 | 1 2
D = {"alpha": 1.0, "d1": 0.5, "d2": 0.5, "d3": 0.5}


def test_unigram_add_alpha_by_hand():
    km = KneserNey(TRAIN, 3)
    # counts 2, 2, 1 of 5; add-one over 3 tokens: (c + 1) / 8
    assert km.loss(km.stats(TEST), "unigram", D) == pytest.approx(-(math.log(3 / 8) + math.log(2 / 8)
                                                                     + math.log(3 / 8)) / 3)


def test_bigram_kneser_ney_by_hand():
    km = KneserNey(TRAIN, 3)
    # every token has one distinct left neighbour: the lowest level is uniform, 1/3
    # P(1|0) = (2 - .5)/2 + .5 * 1/2 * 1/3;  P(2|1) = (1 - .5)/2 + .5 * 2/2 * 1/3;  "2" never a context: 1/3
    expected = [1.5 / 2 + 0.25 / 3, 0.25 + 0.5 / 3, 1 / 3]
    assert km.prob(km.stats(TEST), "bigram", D) == pytest.approx(expected)


def test_trigram_kneser_ney_by_hand():
    km = KneserNey(TRAIN, 3)
    # middle level from continuation counts: 01 <- {1}, 10 <- {0}, 12 <- {0}
    p2_1_0 = (1 - 0.5) / 1 + 0.5 * 1 / 1 * (1 / 3)  # no trigram context at the first position
    p2_2_1 = (1 - 0.5) / 2 + 0.5 * 2 / 2 * (1 / 3)
    p3_2_01 = (1 - 0.5) / 2 + 0.5 * 2 / 2 * p2_2_1  # context 01 seen twice, followed by 0 and 2
    expected = [p2_1_0, p3_2_01, 1 / 3]  # context 12 and middle context 2 unseen: lowest level
    assert km.prob(km.stats(TEST), "trigram", D) == pytest.approx(expected)
    assert km.loss(km.stats(TEST), "trigram", D) == pytest.approx(-np.log(expected).mean())


@pytest.mark.parametrize("order", ["unigram", "bigram", "trigram"])
def test_every_context_is_a_distribution(order):
    rng = np.random.default_rng(0)
    V = 5
    km = KneserNey(rng.integers(0, V, 200), V)
    d = {"alpha": 0.1, "d1": 0.3, "d2": 0.7, "d3": 0.9}
    for a in range(V):
        for b in range(V):
            total = sum(km.prob(km.stats(np.array([a, b, c])), order, d)[1] for c in range(V))
            assert total == pytest.approx(1.0)


def test_weights_are_chosen_on_validation_not_test():
    rng = np.random.default_rng(1)
    train, val = rng.integers(0, 8, 3000), rng.integers(0, 8, 500)
    a = fit_baselines(train, val, rng.integers(0, 8, 500), 8)
    b = fit_baselines(train, val, np.zeros(500, dtype=np.int64), 8)
    assert a.weights == b.weights and a.val == b.val
    assert a.test != b.test
    assert a.best == min(a.test.values())


def test_a_markov_source_is_learnt_better_by_higher_orders():
    rng = np.random.default_rng(2)
    V = 6
    table = rng.dirichlet(np.full(V, 0.2), size=(V, V))  # a peaked second-order chain
    seq = [0, 1]
    for _ in range(60_000):
        seq.append(rng.choice(V, p=table[seq[-2], seq[-1]]))
    s = np.array(seq)
    b = fit_baselines(s[:40_000], s[40_000:50_000], s[50_000:], V)
    assert b.test["trigram"] < b.test["bigram"] < b.test["unigram"] <= math.log(V) + 0.01
    assert b.best_order == "trigram"


def test_baselines_are_cached_beside_the_tokens(tmp_path):
    rng = np.random.default_rng(3)
    data = SimpleNamespace(train=rng.integers(0, 4, 500), val=rng.integers(0, 4, 100),
                           test=rng.integers(0, 4, 100), vocab_size=4, fingerprint="fp", cache=tmp_path)
    first = ngram_baselines(data)
    (cached,) = tmp_path.glob("fp-ngram-*.json")
    data.train = np.zeros(500, dtype=np.int64)  # would change the numbers if recomputed
    assert ngram_baselines(data) == first
    cached.write_text("not json")
    assert ngram_baselines(data) != first  # a damaged cache is recomputed
