import pytest
import torch
import torch.nn.functional as F_

from ffnlab.errors import FFNLabError
from ffnlab.model.hooks import ablate, capture, hooks, patch

from ffnlab.model.names import all_hooks

from hf_tiny import D, F, KINDS, L, V, tiny, tokens


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    return tiny(request.param)


def test_every_documented_hook_name_exists(model):
    assert set(model.hook_sites()) == set(all_hooks(L))
    assert model.n_layers == L and model.d_model == D and model.d_ff == F


def test_hook_identities_hold_and_logits_are_unchanged(model):
    errors = model.verify(tokens())
    assert errors["logits with hooks"] == 0.0
    assert errors["resid_mid = resid_pre + attn_out"] < 1e-6
    assert errors["resid_post = stream + ffn_out"] < 1e-6
    assert errors["ffn_out = down(ffn_post)"] < 1e-5
    assert errors["ffn_post = act(ffn_pre) [* up(ffn_in)]"] < 1e-5
    assert errors["pattern rows sum to 1"] < 1e-5
    assert max(errors.values()) < 1e-5


def test_shapes_of_captured_activations(model):
    x = tokens(2, 7)
    before = model.hf.config._attn_implementation
    with torch.no_grad(), capture(model, ["hook_embed", "blocks.1.ffn.hook_post", "blocks.2.attn.hook_pattern",
                                          "blocks.0.hook_resid_mid", "hook_final"]) as c:
        out = model(x)
    assert c["hook_embed"].shape == (2, 7, D)
    assert c["blocks.1.ffn.hook_post"].shape == (2, 7, F)
    assert c["blocks.2.attn.hook_pattern"].shape == (2, 4, 7, 7)
    assert c["blocks.0.hook_resid_mid"].shape == (2, 7, D)
    assert out.shape == ((2, 7, V) if model.has_head else (2, 7, D))
    if not model.has_head:
        assert torch.equal(out, c["hook_final"])
    assert model.hf.config._attn_implementation == before  # the eager switch is undone


def test_pattern_is_causal_only_for_decoders(model):
    with torch.no_grad(), capture(model, ["blocks.0.attn.hook_pattern"]) as c:
        model(tokens())
    upper = c["blocks.0.attn.hook_pattern"].triu(1).abs().max().item()
    assert (upper == 0.0) == model.causal


def test_ffn_post_is_activation_of_pre(model):
    """Checked here from the weights alone (verify() checks it through the family's activation module)."""
    with torch.no_grad(), capture(model, ["blocks.1.ffn.hook_in", "blocks.1.ffn.hook_pre",
                                          "blocks.1.ffn.hook_post"]) as c:
        model(tokens())
    w = model.ffn_weights(1)
    x, pre, post = c["blocks.1.ffn.hook_in"], c["blocks.1.ffn.hook_pre"], c["blocks.1.ffn.hook_post"]
    act = model.config.to_dict().get("hidden_act") or model.config.to_dict().get("hidden_activation") \
        or model.config.to_dict().get("activation_function") or model.config.to_dict().get("activation")
    fn = {"silu": F_.silu, "gelu": F_.gelu, "gelu_new": lambda t: F_.gelu(t, approximate="tanh"),
          "gelu_pytorch_tanh": lambda t: F_.gelu(t, approximate="tanh")}[act]
    if "gate" in w:  # gated: post = act(gate x) * (up x)
        torch.testing.assert_close(pre, F_.linear(x, w["gate"], w["gate_bias"]))
        torch.testing.assert_close(post, fn(pre) * F_.linear(x, w["up"], w["up_bias"]))
    else:
        torch.testing.assert_close(pre, F_.linear(x, w["in"], w["in_bias"]))
        torch.testing.assert_close(post, fn(pre))
    assert model.ffn_values(1).shape == (F, D)


def test_zero_ablating_an_ffn_equals_removing_its_output(model):
    """Zeroing ffn.hook_out leaves resid_post = resid_mid (pre-LN) / ffn_in (post-LN) exactly."""
    x = tokens()
    with torch.no_grad():
        base = model(x)
        with ablate(model, ["blocks.1.ffn.hook_out"]), \
                capture(model, ["blocks.1.hook_resid_mid", "blocks.1.ffn.hook_in", "blocks.1.hook_resid_post"]) as c:
            ablated = model(x)
        again = model(x)
    stream = c["blocks.1.hook_resid_mid"] if model.pre_norm else c["blocks.1.ffn.hook_in"]
    torch.testing.assert_close(c["blocks.1.hook_resid_post"], stream, rtol=0, atol=1e-6)
    assert (ablated - base).abs().max() > 1e-4
    assert torch.equal(again, base)  # hooks removed, weights untouched


def test_zero_ablating_all_neurons_equals_zeroing_the_down_input(model):
    x = tokens()
    with torch.no_grad():
        with ablate(model, ["blocks.2.ffn.hook_post"], neurons=list(range(F))), \
                capture(model, ["blocks.2.ffn.hook_out"]) as c:
            model(x)
    bias = model.ffn_weights(2).get("down_bias")
    expected = torch.zeros(2, 9, D) if bias is None else bias.detach().expand(2, 9, D)
    torch.testing.assert_close(c["blocks.2.ffn.hook_out"], expected)


def test_editing_resid_mid_reaches_the_next_layers(model):
    """Patching the stream after attention with a recorded one reproduces that run downstream.

    In a parallel block the FFN reads resid_pre, not resid_mid, so its output is patched too."""
    a, b = tokens(seed=1), tokens(seed=2)
    names = ["blocks.1.hook_resid_mid"] + (["blocks.1.ffn.hook_out"] if model.block_form == "parallel" else [])
    with torch.no_grad():
        with capture(model, names) as rec:
            target = model(b)
        with patch(model, {n: rec[n] for n in names}):
            patched = model(a)
        with patch(model, {names[0]: rec[names[0]]}):
            mid_only = model(a)
    torch.testing.assert_close(patched, target, atol=1e-5, rtol=1e-5)
    assert (model.block_form == "parallel") == (not torch.allclose(mid_only, target, atol=1e-4))


def test_pattern_is_read_only(model):
    before = model.hf.config._attn_implementation
    with pytest.raises(FFNLabError, match="read-only"), torch.no_grad():
        with hooks(model, {"blocks.0.attn.hook_pattern": lambda p: p * 0}):
            model(tokens())
    assert model.hf.config._attn_implementation == before


def test_unembed(model):
    if not model.has_head:
        with pytest.raises(FFNLabError, match="no head"):
            model.unembed(torch.zeros(1, 1, D))
        return
    with torch.no_grad(), capture(model, [f"blocks.{L - 1}.hook_resid_post", "hook_final"]) as c:
        logits = model(tokens())
    last = c[f"blocks.{L - 1}.hook_resid_post"] if model.pre_norm else c["hook_final"]
    torch.testing.assert_close(model.unembed(last), logits)


def test_param_components_cover_every_parameter(model):
    comps = {}
    for name, p in model.named_parameters():
        comps[model.param_component(name)] = comps.get(model.param_component(name), 0) + p.numel()
    ffn = sum(sum(v.numel() for v in model.ffn_weights(i).values() if v is not None) for i in range(L))
    assert comps["ffn"] == ffn
    assert sum(comps.values()) == model.n_params()
    assert comps["embeddings"] >= V * D
    assert set(comps) <= {"embeddings", "attention", "ffn", "norms", "head", "pooler"}


def test_bad_tokens_shape_is_a_user_error(model):
    with pytest.raises(FFNLabError, match=r"\(B, T\)"):
        model(torch.zeros(5, dtype=torch.long))


WRONG = {  # family, change to its spec, the identity that must catch it
    "attention output is the query projection": ("llama", {"attn_out": "self_attn.q_proj"},
                                                 "resid_post = stream \\+ ffn_out"),
    "parallel block declared sequential": ("gpt_neox", {"block": "sequential"}, r"ffn_in = norm\(resid_mid\)"),
    "sequential block declared parallel": ("llama", {"block": "parallel"}, r"ffn_in = norm\(resid_pre\)"),
    "FFN output taken before the post-FFN norm (TransformerLens #1648)": (
        "gemma2", {"ffn_out": "mlp"}, "resid_post = stream \\+ ffn_out"),
    "post-FFN norm left out": ("olmo2", {"ffn_post_norm": None}, r"ffn_out = down\(ffn_post\)"),
    "up projection as the gate": ("qwen2", {"ffn_in": "mlp.up_proj", "ffn_up": "mlp.gate_proj"},
                                  r"ffn_post = act"),
    "wrong activation module": ("gpt2", {"ffn_act": "attn.attn_dropout"}, r"ffn_post = act"),
    "final norm left out of the lens": ("mistral", {"final_norm": None}, "hook_final = final_norm"),
}


@pytest.mark.parametrize("case", WRONG)
def test_a_wrong_spec_is_refused(case):
    """The load-time check can fail: each deliberately wrong spec breaks a named identity."""
    from dataclasses import replace

    from ffnlab.pretrained import FAMILIES, PretrainedModel

    family, change, identity = WRONG[case]
    kind = next(k for k in FAMILIES[family].model_types)
    hf = tiny(kind).hf
    wrong = PretrainedModel(hf, None, {"name": "wrong"}, family=replace(FAMILIES[family], **change))
    with pytest.raises(FFNLabError, match=f"wrong: hook check failed: {identity}"):
        wrong.verify(tokens())


def test_ffnlab_models_and_adapters_satisfy_one_contract(model):
    """What analyses may use (ffnlab.model.contract) is there on both kinds of model."""
    from ffnlab.model import Transformer, preset
    from ffnlab.model.contract import AnalysableModel, PretrainedAnalysable

    own = Transformer(preset("tiny"))
    assert isinstance(own, AnalysableModel) and isinstance(model, PretrainedAnalysable)
    for m in (own, model):
        names = [n for n, _ in m.named_parameters()]
        assert {m.param_component(n) for n in names} <= {"embeddings", "attention", "ffn", "norms", "pooler", "head"}


def test_editing_the_gate_reaches_the_neurons(model):
    """ffn.hook_pre is editable, also where gate and up are one fused projection (Phi-3): a zeroed gate
    gives act(0) = 0 for every neuron of a gated FFN (SiLU, GELU)."""
    if "gate" not in model.ffn_weights(0):
        pytest.skip("not a gated FFN")
    with torch.no_grad(), ablate(model, ["blocks.1.ffn.hook_pre"]), capture(model, ["blocks.1.ffn.hook_post"]) as c:
        model(tokens())
    assert c["blocks.1.ffn.hook_post"].abs().max() == 0.0
