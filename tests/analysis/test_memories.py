import torch

from ffnlab.analysis.memories import (agreement, layer_value_tokens, promotion, sub_updates, value_logits,
                                     value_tokens)
from ffnlab.analysis.neurons import LayerStats, NeuronStats, StatsConfig, neuron_stats
from ffnlab.model import Transformer, capture
from tiny_models import V, orthogonal_model

def set_values(model: Transformer, layer: int, tokens: list[int], scale: float = 1.0) -> None:
    """Value of neuron i := embedding of tokens[i] (fc_out's column i)."""
    with torch.no_grad():
        model.blocks[layer].ffn.fc_out.weight.copy_(scale * model.tok.weight[tokens].T)


def test_values_project_to_the_token_they_were_set_to():
    model = orthogonal_model()
    want = torch.randint(V, (64,), generator=torch.Generator().manual_seed(3)).tolist()
    set_values(model, 1, want)
    vt = value_tokens(value_logits(model, 1, chunk=10), k=5)
    assert vt.top[:, 0].tolist() == want
    assert (vt.bottom[:, 0] != vt.top[:, 0]).all()
    # a negative coefficient promotes the value's most suppressed token
    sign = torch.tensor([1.0, -1.0] * 32)
    assert vt.promoted(sign)[1].tolist() == vt.bottom[1].tolist()


def test_chunked_value_tokens_equal_the_whole_projection():
    model = orthogonal_model()
    set_values(model, 1, torch.randint(V, (64,), generator=torch.Generator().manual_seed(4)).tolist(), scale=0.7)
    whole = value_tokens(value_logits(model, 1), k=6)
    chunked = layer_value_tokens(model, 1, k=6, chunk=7)  # 64 neurons in uneven chunks
    # chunk sizes change the BLAS kernel, so scores agree to rounding and the tokens exactly
    assert torch.equal(whole.top, chunked.top) and torch.equal(whole.bottom, chunked.bottom)
    assert torch.allclose(whole.top_scores, chunked.top_scores, rtol=1e-5, atol=1e-5)
    assert torch.allclose(whole.bottom_scores, chunked.bottom_scores, rtol=1e-5, atol=1e-5)
    assert torch.allclose(value_logits(model, 1, [5, 9]), value_logits(model, 1)[[5, 9]], rtol=1e-5, atol=1e-5)


def hand_stats(targets: list[int], seq_len: int = 4) -> NeuronStats:
    """One layer; neuron f's top trigger is window f's position 1, followed by targets[f]."""
    f = len(targets)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(V, (f * seq_len,), generator=g)
    tokens[torch.arange(f) * seq_len + 2] = torch.tensor(targets)
    layer = LayerStats(f, StatsConfig(k=2))
    layer.top_index = torch.stack([torch.arange(f) * seq_len + 1, torch.arange(f) * seq_len], 1)
    layer.top_values = torch.ones(f, 2)
    return NeuronStats(StatsConfig(k=2), [layer], tokens, seq_len)


def test_agreement_counts_neurons_whose_value_predicts_the_trigger_next_token():
    model = orthogonal_model()
    g = torch.Generator().manual_seed(1)
    targets = torch.randint(V, (64,), generator=g).tolist()
    # neurons 0..15 predict their trigger's next token; the rest predict (target + 1) mod V
    want = targets[:16] + [(t + 1) % V for t in targets[16:]]
    set_values(model, 0, want)
    vt = value_tokens(value_logits(model, 0), k=10)
    a = agreement(hand_stats(targets), 0, vt, causal=True, vocab_size=V)
    assert a.neurons == 64
    assert a.agree == 16 / 64
    assert a.agree_top10 >= 16 / 64
    assert a.shuffled < 0.1 and a.uniform == 1 / V
    assert 0 < a.unigram < 0.1


def test_agreement_on_a_real_pass_is_a_share_and_shallow_proxy_is_at_least_random():
    model = orthogonal_model()
    tokens = torch.randint(20, (2048,), generator=torch.Generator().manual_seed(2))
    stats = neuron_stats(model, tokens, seq_len=32, cfg=StatsConfig(k=10), dtype=None, progress=False)
    for layer in range(2):
        a = agreement(stats, layer, value_tokens(value_logits(model, layer)), causal=True, vocab_size=V)
        assert 0 <= a.agree <= a.agree_top10 <= 1
        assert 0.1 <= a.same_last_random <= a.same_last + 0.2  # 20 distinct tokens: >= 1/10 by pigeonhole


def test_sub_updates_are_the_largest_terms_of_the_ffn_output():
    model = orthogonal_model()
    want = list(range(64))
    set_values(model, 1, want, scale=0.1)
    tokens = torch.randint(V, (1, 12), generator=torch.Generator().manual_seed(4))
    subs = sub_updates(model, tokens, 1, top=6, k=3)
    with capture(model, ["blocks.1.ffn.hook_post", "blocks.1.ffn.hook_out"]) as cache:
        model(tokens)
    m = cache["blocks.1.ffn.hook_post"][0, -1]
    weight = m.abs() * model.ffn_values(1).norm(dim=1)
    assert [s.neuron for s in subs] == weight.topk(6).indices.tolist()
    for s in subs:  # each term promotes the token its value was set to (or, if m < 0, not it)
        assert (s.tokens[0] == want[s.neuron]) == (s.coefficient > 0)
    # the terms (all of them) plus the bias are exactly the FFN output
    ffn = model.blocks[1].ffn
    assert torch.allclose(m @ model.ffn_values(1) + ffn.fc_out.bias, cache["blocks.1.ffn.hook_out"][0, -1], atol=1e-5)


def test_promotion_scores_a_token_every_value_pushes():
    model = orthogonal_model()
    set_values(model, 1, [7] * 64, scale=3.0)  # every neuron writes token 7
    tokens = torch.randint(V, (4, 16), generator=torch.Generator().manual_seed(5))
    p = promotion(model, tokens, 1, value_logits(model, 1))
    assert p.changes > 0
    assert p.promoted > 5  # token 7 sits ~11 standard deviations above the vocabulary mean
    assert abs(p.eliminated) < 1  # the dropped tokens are not pushed down
