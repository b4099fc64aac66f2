import pytest
import torch

from ffnlab.analysis.attribution import integrated_gradients
from ffnlab.analysis.bootstrap import bootstrap_mean
from ffnlab.analysis.knowledge import (layer_attributions, matched_random, mean_abs_activation,
                                       overlap, refine, suppression)
from tiny_models import V, orthogonal_model


def fact_model(facts: list[tuple[int, int]]):
    """Layer 1's neuron f fires only when the current token is facts[f]'s cue and writes its answer;
    attention, positions and layer 0's FFN write nothing, so the last token alone decides."""
    m = orthogonal_model()
    e = m.tok.weight.detach()
    with torch.no_grad():
        m.pos.weight.zero_()
        for b in m.blocks:
            b.attn.proj.weight.zero_()
            b.attn.proj.bias.zero_()
        m.blocks[0].ffn.fc_out.weight.zero_()
        m.blocks[0].ffn.fc_out.bias.zero_()
        ffn = m.blocks[1].ffn
        ffn.fc_in.weight.zero_()
        ffn.fc_in.bias.fill_(-6.0)
        ffn.fc_out.weight.zero_()
        ffn.fc_out.bias.zero_()
        for f, (cue, answer) in enumerate(facts):
            ffn.fc_in.weight[f] = e[cue] / e[cue].norm()
            ffn.fc_out.weight[:, f] = 2 * e[answer]
    return m


def prompts_ending_in(cue: int, n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.cat([torch.randint(100, V, (1, 5 + i), generator=g), torch.tensor([[cue]])], 1) for i in range(n)]


FACTS = [(3, 40), (5, 41), (7, 42), (9, 43)]  # (cue token, answer token); cues and answers outside 100..V


def test_disjoint_fact_neurons_are_found_and_are_specific():
    """Each fact has its own neuron: it is what refinement keeps, zeroing it removes the fact's answer,
    and leaves unrelated facts (specificity ~0 leakage) and a matched random set without effect."""
    model = fact_model(FACTS)
    prompts = [prompts_ending_in(cue, 3, seed=i) for i, (cue, _) in enumerate(FACTS)]
    sets = [refine([layer_attributions(model, p, a, steps=8) for p in ps]) for ps, (_, a) in zip(prompts, FACTS)]
    assert sets == [[(1, f)] for f in range(len(FACTS))]
    mean_abs = mean_abs_activation(model, [p for ps in prompts for p in ps])
    g = torch.Generator().manual_seed(0)
    attributed = [n for s in sets for n in s]
    for f, ((cue, answer), own) in enumerate(zip(FACTS, sets)):
        assert suppression(model, prompts[f], answer, own) < -0.9
        rand = matched_random(own, mean_abs, g, avoid=attributed)
        assert rand[0][0] == 1 and rand[0] not in attributed
        assert abs(suppression(model, prompts[f], answer, rand)) < 1e-4
        for j, (_, other) in enumerate(FACTS):
            if j != f:  # the neuron is silent on other facts' prompts: zeroing it changes nothing
                assert abs(suppression(model, prompts[j], other, own)) < 1e-4
    ov = overlap(sets, model.n_layers)
    assert ov.neurons == 4 and ov.recurring == {2: 0} and ov.mean_jaccard == 0 and ov.by_layer == [0, 4]


def test_a_neuron_shared_by_facts_recurs_and_is_not_specific():
    """One neuron fires on both cues and writes both answers: it is found for both facts, recurs in the
    overlap, and zeroing it lowers the other fact as much as its own (specificity ~0)."""
    model = fact_model([(3, 40)])
    e = model.tok.weight.detach()
    with torch.no_grad():
        ffn = model.blocks[1].ffn
        ffn.fc_in.weight[0] = (e[3] / e[3].norm() + e[5] / e[5].norm())
        ffn.fc_out.weight[:, 0] = 0.2 * (e[40] + e[41])  # small: p(answer) rises along the whole path
    pa, pb = prompts_ending_in(3, 2, 0), prompts_ending_in(5, 2, 1)
    sa = refine([layer_attributions(model, p, 40, steps=16) for p in pa])
    sb = refine([layer_attributions(model, p, 41, steps=16) for p in pb])
    assert sa == sb == [(1, 0)]
    own, cross = suppression(model, pa, 40, sa), suppression(model, pb, 41, sa)
    assert own < -0.5 and abs(cross - own) < 0.1
    assert overlap([sa, sb], 2).recurring == {2: 1}


def test_batched_attribution_equals_one_layer_at_a_time():
    model = orthogonal_model(2)
    tokens = torch.randint(V, (1, 9), generator=torch.Generator().manual_seed(2))
    both = layer_attributions(model, tokens, 17, steps=6, max_rows=12)  # both layers' paths in one pass
    apart = layer_attributions(model, tokens, 17, steps=6, max_rows=6)
    for layer in range(2):
        want = integrated_gradients(model, tokens, 17, layer, steps=6)
        assert torch.allclose(both[layer], want, rtol=1e-4, atol=1e-9)
        assert torch.allclose(apart[layer], want, rtol=1e-4, atol=1e-9)


def test_refine_keeps_neurons_above_threshold_in_most_prompts():
    a = torch.tensor([[1.0, 0.5, 0.1], [0.0, 0.3, -2.0]])
    b = torch.tensor([[1.0, 0.1, 0.5], [0.0, 0.3, 0.0]])
    c = torch.tensor([[1.0, 0.1, 0.5], [0.0, 0.1, 0.0]])
    # (0,0) in 3/3, (1,1) in 2/3, (0,2) in 2/3, (0,1) in 1/3; a negative attribution never counts
    assert refine([a, b, c]) == [(0, 0), (0, 2), (1, 1)]
    assert refine([a, b, c], max_neurons=1) == [(0, 0)]
    assert refine([a, b]) == [(0, 0), (1, 1)]  # two prompts: both must share it
    assert refine([-a]) == [(1, 2)]


def test_matched_random_draws_from_the_same_layer_and_closest_activation():
    mean_abs = torch.tensor([[1.0, 2.0, 4.0, 8.0, 16.0, 64.0], [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    picks = {tuple(matched_random([(0, 3)], mean_abs, g, avoid=[(0, 2)], pool=2)[0]) for _ in range(50)}
    assert picks == {(0, 4), (0, 1)}  # the two closest free ones (50 draws), never the avoided 2 or itself
    assert all(p[0] == 0 for p in picks)
    two = matched_random([(1, 0), (1, 1)], mean_abs, g, pool=1)
    assert len(set(two)) == 2 and all(n[0] == 1 and n not in [(1, 0), (1, 1)] for n in two)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_items():
    mean, lo, hi = bootstrap_mean([0.0, 1.0] * 5)
    assert mean == 0.5 and lo < 0.5 < hi
    _, lo2, hi2 = bootstrap_mean([0.0, 1.0] * 200)
    assert hi2 - lo2 < (hi - lo) / 3
    assert bootstrap_mean([2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_mean([])


def test_the_experiment_measure_on_disjoint_fact_neurons_gives_specific_suppression():
    """c7-knowledge-neurons' measurement end to end on the hand-built model: own neurons remove the
    answer, matched random ones and unrelated facts do not move, so the criterion's quantities are ~1."""
    from types import SimpleNamespace

    from ffnlab.experiments.c7_neurons import Fact, NeuronsConfig, judge, measure

    model = fact_model(FACTS)
    facts = [Fact(f"fact {i}", f"relation {i % 2}", prompts_ending_in(cue, 3, seed=i), answer)
             for i, (cue, answer) in enumerate(FACTS)]
    cfg = NeuronsConfig(facts=4, prompts=3, steps=8, random_draws=2, unrelated=2)
    res = measure(SimpleNamespace(model=model), facts, cfg)
    for i, r in enumerate(res["records"]):
        assert r["neurons"] == [[1, i]] and r["unrelated_facts"] == 2
        assert r["own"] < -0.9 and abs(r["random"]) < 1e-4 and abs(r["unrelated"]) < 1e-4
    assert res["overlap"]["recurring"] == {2: 0}
    est, _, _, used = judge(res["records"])
    assert used == 4 and est[0].ci_low > 0.9 and est[1].ci_low > 0.9
