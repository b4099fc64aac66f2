import pytest
import torch
import torch.nn.functional as F_

from ffnlab.errors import FFNLabError
from ffnlab.model.hooks import ablate, capture, hooks, patch

from hf_tiny import D, F, KINDS, L, V, tiny, tokens

NAMES = ["hook_resid_pre", "attn.hook_z", "attn.hook_out", "hook_resid_mid", "ffn.hook_in", "ffn.hook_pre",
         "ffn.hook_post", "ffn.hook_out", "hook_resid_post"]


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    return tiny(request.param)


def test_every_documented_hook_name_exists(model):
    sites = model.hook_sites()
    expected = {"hook_embed", "hook_final"} | {f"blocks.{i}.{n}" for i in range(L) for n in NAMES + ["attn.hook_pattern"]}
    assert set(sites) == expected
    assert model.n_layers == L and model.d_model == D and model.d_ff == F


def test_hook_identities_hold_and_logits_are_unchanged(model):
    errors = model.verify(tokens())
    assert errors["logits with hooks"] == 0.0
    assert errors["resid_mid = resid_pre + attn_out"] < 1e-6
    assert errors["resid_post = stream + ffn_out"] < 1e-6
    assert errors["ffn_out = down(ffn_post)"] < 1e-5
    assert errors["pattern rows sum to 1"] < 1e-5


def test_shapes_of_captured_activations(model):
    x = tokens(2, 7)
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
    assert model.hf.config._attn_implementation == "sdpa"  # the eager switch is undone


def test_pattern_is_causal_only_for_decoders(model):
    with torch.no_grad(), capture(model, ["blocks.0.attn.hook_pattern"]) as c:
        model(tokens())
    upper = c["blocks.0.attn.hook_pattern"].triu(1).abs().max().item()
    assert (upper == 0.0) == model.causal


def test_ffn_post_is_activation_of_pre(model):
    with torch.no_grad(), capture(model, ["blocks.1.ffn.hook_in", "blocks.1.ffn.hook_pre",
                                          "blocks.1.ffn.hook_post"]) as c:
        model(tokens())
    w = model.ffn_weights(1)
    x, pre, post = c["blocks.1.ffn.hook_in"], c["blocks.1.ffn.hook_pre"], c["blocks.1.ffn.hook_post"]
    if "gate" in w:  # SwiGLU: post = silu(gate x) * (up x)
        torch.testing.assert_close(pre, x @ w["gate"].T)
        torch.testing.assert_close(post, F_.silu(pre) * (x @ w["up"].T))
    else:
        torch.testing.assert_close(pre, x @ w["in"].T + w["in_bias"])
        gelu = F_.gelu(pre, approximate="tanh") if model.architecture == "gpt2" else F_.gelu(pre)
        torch.testing.assert_close(post, gelu)
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
    assert torch.equal(c["blocks.1.hook_resid_post"], stream)
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
    """Patching the stream after attention with a recorded one reproduces that run downstream."""
    a, b = tokens(seed=1), tokens(seed=2)
    with torch.no_grad():
        with capture(model, ["blocks.1.hook_resid_mid"]) as rec:
            target = model(b)
        with patch(model, {"blocks.1.hook_resid_mid": rec["blocks.1.hook_resid_mid"]}):
            patched = model(a)
    torch.testing.assert_close(patched, target, atol=1e-5, rtol=1e-5)


def test_pattern_is_read_only(model):
    with pytest.raises(FFNLabError, match="read-only"), torch.no_grad():
        with hooks(model, {"blocks.0.attn.hook_pattern": lambda p: p * 0}):
            model(tokens())
    assert model.hf.config._attn_implementation == "sdpa"


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


def test_a_wrong_site_mapping_is_refused():
    """The load-time check can fail: attention's output mapped to the query projection."""
    from ffnlab.model.hooks import HookSite
    from ffnlab.pretrained.llama import LlamaAdapter

    class Wrong(LlamaAdapter):
        def layer_sites(self, i, layer):
            return {**super().layer_sites(i, layer), "attn.hook_out": HookSite(layer.self_attn.q_proj)}

    model = Wrong(tiny("llama").hf, None, {"name": "wrong"})
    with pytest.raises(FFNLabError, match="wrong: hook check failed: resid_mid = resid_pre \\+ attn_out"):
        model.verify(tokens())
