import pytest
import torch

from ffnlab.analysis.attribution import answer_prob, attribute, integrated_gradients, neuron_effects, top_neurons
from ffnlab.model import FFNConfig, Transformer, capture, hooks, preset, scale
from tiny_models import V, orthogonal_model

def model_and_prompt(seed: int = 0):
    return orthogonal_model(seed), torch.randint(V, (1, 10), generator=torch.Generator().manual_seed(seed))


def test_integrated_gradients_are_complete():
    """IG's completeness: the attributions sum to p(actual) - p(neurons at zero) at that position."""
    model, tokens = model_and_prompt()
    answer = 17
    ig = integrated_gradients(model, tokens, answer, layer=1, steps=300)
    p = answer_prob(model, tokens, answer)
    # zero every neuron of layer 1 at the last position only (ig scales only that position)
    def zero_last(a):
        a = a.clone()
        a[:, -1] = 0
        return a
    with torch.no_grad(), hooks(model, {"blocks.1.ffn.hook_post": zero_last}):
        p0 = float(model(tokens)[0, -1].softmax(-1)[answer])
    assert float(ig.sum()) == pytest.approx(p - p0, rel=0.02, abs=1e-7)


def test_a_neuron_built_to_carry_the_answer_is_found_and_matters_more_than_random():
    torch.manual_seed(1)
    model = Transformer(preset("tiny", n_layers=2, ffn=FFNConfig(kind="mlp", activation="gelu", d_ff=64))).eval()
    tokens = torch.randint(256, (1, 10), generator=torch.Generator().manual_seed(1))
    answer = 42
    with torch.no_grad(), capture(model, ["blocks.1.ffn.hook_post"]) as cache:
        model(tokens)
    star = int(cache["blocks.1.ffn.hook_post"][0, -1].argmax())  # the most active neuron at the answer position
    e = model.tok.weight[answer]
    with torch.no_grad():  # its value now writes the answer's (tied) unembedding direction
        model.blocks[1].ffn.fc_out.weight[:, star] = e / e.norm()
    scores = attribute(model, tokens, answer, steps=20)
    found = top_neurons(scores, max_neurons=3)
    assert found[0] == (1, star)
    eff = neuron_effects(model, tokens, answer, found, width=64, seed=0)
    assert eff["suppress"] < -0.3 and eff["amplify"] > 0.1
    assert abs(eff["random_suppress"]) < abs(eff["suppress"]) / 10
    # the intervention goes through the hook and leaves the model as it was
    assert answer_prob(model, tokens, answer) == pytest.approx(eff["p"])
    with scale(model, "blocks.1.ffn.hook_post", [star], 0.0):
        assert answer_prob(model, tokens, answer) == pytest.approx(eff["p"] * (1 + eff["suppress"]), rel=1e-5)


def test_top_neurons_threshold_and_cap():
    scores = torch.tensor([[0.0, 1.0, 0.5], [0.1, 0.3, 0.05]])
    assert top_neurons(scores, threshold=0.2, max_neurons=5) == [(0, 1), (0, 2), (1, 1)]
    assert top_neurons(scores, threshold=0.2, max_neurons=2) == [(0, 1), (0, 2)]
