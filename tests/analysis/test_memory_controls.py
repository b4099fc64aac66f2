import pytest
import torch

from ffnlab.analysis.memories import agreement, promotion, value_logits, value_tokens
from ffnlab.analysis.bootstrap import interval
from ffnlab.analysis.bootstrap import resample_means as bootstrap
from ffnlab.analysis.memory_controls import (frequency_matched, neuron_agreement,
                                             promotion_scores, shallow_share, shallow_shares, token_counts)
from ffnlab.analysis.neurons import LayerStats, NeuronStats, StatsConfig
from test_memories import hand_stats, set_values
from tiny_models import V, orthogonal_model


def test_shallow_share_counts_triggers_sharing_a_last_token_or_bigram():
    last = torch.tensor([[1, 1, 2, 3], [4, 5, 6, 7], [9, 9, 9, 9]])
    none = torch.full((3, 4, 2), -1)
    assert shallow_share(last, none).tolist() == [0.5, 0.0, 1.0]
    bigrams = none.clone()
    bigrams[1, 0, 1] = bigrams[1, 3, 1] = 77  # row 1: triggers 0 and 3 share the bigram before their last token
    assert shallow_share(last, bigrams).tolist() == [0.5, 0.5, 1.0]


def stats_of(tokens: torch.Tensor, top_index: torch.Tensor, seq_len: int) -> NeuronStats:
    k = top_index.shape[1]
    layer = LayerStats(top_index.shape[0], StatsConfig(k=k))
    layer.top_index, layer.top_values = top_index, torch.ones(top_index.shape, dtype=torch.float32)
    layer.count = len(tokens)
    return NeuronStats(StatsConfig(k=k), [layer], tokens, seq_len)


def test_shallow_shares_of_surface_neurons_exceed_random_positions():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1000, (4096,), generator=g)
    seq_len = 64
    # neuron 0 fires on 8 occurrences of token 5; neuron 1 on 8 positions with distinct tokens
    at = torch.arange(8) * 500 + 10
    tokens[at] = 5
    other = torch.arange(8) * 500 + 30
    s = stats_of(tokens, torch.stack([at, other]), seq_len)
    shares, rand = shallow_shares(s, 0)
    assert shares.tolist() == [1.0, 0.0]
    assert rand.max() <= 0.25  # 8 random positions of 1000 roughly uniform tokens rarely coincide
    # a bigram crossing a window's start is not a bigram: position 0 of a window has none before it
    starts = torch.tensor([[0, 64, 128, 192]])
    tokens[starts] = torch.tensor([1, 2, 3, 4])
    tokens[[62, 126]], tokens[[63, 127]] = 51, 50  # windows 1 and 2 are preceded by the same bigram (51, 50)
    assert shallow_shares(stats_of(tokens, starts, seq_len), 0)[0].tolist() == [0.0]


def test_frequency_matched_tokens_have_about_the_same_count_and_are_never_the_token():
    counts = torch.arange(1000) * 3  # token t occurs 3t times
    g = torch.Generator().manual_seed(0)
    toks = torch.tensor([0, 1, 500, 998, 999] * 40)
    matched = frequency_matched(toks, counts, g, pool=10)
    assert (matched != toks).all()
    assert ((counts[matched] - counts[toks]).abs() <= 3 * 11).all()
    assert len(set(matched[toks == 500].tolist())) > 3  # random among the pool, not one fixed token


def test_neuron_agreement_matches_the_layer_agreement():
    model = orthogonal_model()
    targets = torch.randint(V, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    set_values(model, 0, targets[:16] + [(t + 1) % V for t in targets[16:]])
    vt = value_tokens(value_logits(model, 0), k=10)
    stats = hand_stats(targets)
    a = agreement(stats, 0, vt, causal=True, vocab_size=V)
    n = neuron_agreement(stats, 0, vt, causal=True, counts=token_counts(stats, V))
    assert len(n.hit) == 64 and float(n.hit.mean()) == a.agree == 16 / 64
    assert float(n.unigram.mean()) == pytest.approx(a.unigram)
    assert float(n.shuffled.mean()) < 0.1


def test_promotion_scores_agree_with_promotion_and_a_frequency_matched_token_scores_near_zero():
    model = orthogonal_model()
    set_values(model, 1, [7] * 64, scale=3.0)  # every neuron writes token 7
    tokens = torch.randint(V, (4, 16), generator=torch.Generator().manual_seed(5))
    logits = value_logits(model, 1)
    counts = torch.bincount(tokens.flatten(), minlength=V)
    p = promotion_scores(model, tokens, 1, logits, counts, torch.Generator().manual_seed(0))
    old = promotion(model, tokens, 1, logits)
    assert len(p.promoted) == old.changes > 0
    assert float(p.promoted.mean()) == pytest.approx(old.promoted, rel=1e-5)
    assert float(p.eliminated.mean()) == pytest.approx(old.eliminated, rel=1e-5, abs=1e-6)
    assert float(p.promoted.mean()) > 5 and abs(float(p.promoted_matched.mean())) < 1


def test_bootstrap_interval_of_a_mean():
    x = torch.tensor([0.0, 1.0] * 50, dtype=torch.float64)
    lo, hi = interval(bootstrap(x, 500, seed=0))
    assert lo < 0.5 < hi and hi - lo < 0.25
    pairs = bootstrap(torch.stack([x, 2 * x], 1), 200)
    assert pairs.shape == (200, 2) and torch.allclose(pairs[:, 1], 2 * pairs[:, 0])
