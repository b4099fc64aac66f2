"""Hook identities hold exactly; interventions edit what they say and leave no hook behind."""

import pytest
import torch

from ffnlab.errors import FFNLabError
from ffnlab.model import FFNConfig, Transformer, ablate, capture, hooks, patch, preset, scale


def all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(params=["pre", "post"])
def model(request):
    torch.manual_seed(0)
    cfg = preset("tiny", norm_position=request.param, final_norm=request.param == "pre")
    return Transformer(cfg).eval()


def tokens(b=2, t=16, seed=0):
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(seed))


def test_residual_identities_are_exact(model):
    names = [f"blocks.{i}.{h}" for i in range(2) for h in
             ("hook_resid_pre", "attn.hook_out", "hook_resid_mid", "ffn.hook_in", "ffn.hook_out", "hook_resid_post")]
    with capture(model, names) as c:
        model(tokens())
    for i in range(2):
        b = f"blocks.{i}."
        assert torch.equal(c[b + "hook_resid_mid"], c[b + "hook_resid_pre"] + c[b + "attn.hook_out"])
        stream = c[b + "hook_resid_mid"] if model.config.norm_position == "pre" else c[b + "ffn.hook_in"]
        assert torch.equal(c[b + "hook_resid_post"], stream + c[b + "ffn.hook_out"])


def test_pattern_path_equals_fused_path(model):
    x = tokens()
    plain = model(x)
    with capture(model, ["blocks.1.attn.hook_pattern"]) as c:
        hooked = model(x)
    torch.testing.assert_close(hooked, plain, rtol=1e-5, atol=1e-5)
    pattern = c["blocks.1.attn.hook_pattern"]
    assert pattern.shape == (2, 4, 16, 16)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 4, 16))
    assert torch.all(pattern.triu(1) == 0)  # causal


def test_capture_reduce_keeps_only_the_reduction(model):
    with capture(model, ["blocks.0.ffn.hook_post"], reduce=lambda name, a: a.mean((0, 1))) as c:
        model(tokens(seed=1))
        model(tokens(seed=2))
    assert c["blocks.0.ffn.hook_post"].shape == (2, 256)  # two forwards, one (F,) mean each
    with capture(model, ["blocks.0.ffn.hook_post"]) as full:
        model(tokens(seed=1))
    torch.testing.assert_close(c.parts("blocks.0.ffn.hook_post")[0], full["blocks.0.ffn.hook_post"].mean((0, 1)))


def test_zero_ablation_of_a_whole_ffn_equals_no_ffn_layer():
    torch.manual_seed(0)
    model = Transformer(preset("tiny")).eval()
    x = tokens()
    with ablate(model, ["blocks.1.ffn.hook_out"], "zero"):
        ablated = model(x)
    cfg = preset("tiny", ffn_overrides=((1, FFNConfig(kind="none")),))
    without = Transformer(cfg).eval()
    without.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("blocks.1.ffn")
                             and not k.startswith("blocks.1.ln2")}, strict=True)
    assert torch.equal(ablated, without(x))


def test_neuron_ablation_mean_and_resample(model):
    x, ref_tokens = tokens(seed=3), tokens(b=4, seed=4)
    name = "blocks.0.ffn.hook_post"
    with capture(model, [name]) as ref:
        model(ref_tokens)
    neurons = [1, 5, 9]
    with ablate(model, [name], "mean", neurons=neurons, reference=ref), capture(model, [name]) as c:
        model(x)
    mean = ref[name].reshape(-1, 256).mean(0)
    assert torch.allclose(c[name][..., neurons], mean[neurons].expand(2, 16, 3))
    with ablate(model, [name], "resample", reference=ref, generator=torch.Generator().manual_seed(0)), \
            capture(model, [name]) as r:
        model(x)
    for b in range(2):  # each sequence's activations are one reference sequence's
        assert any(torch.equal(r[name][b], ref[name][j]) for j in range(4))


def test_scale_and_patch(model):
    x, y = tokens(seed=5), tokens(seed=6)
    name = "blocks.1.ffn.hook_post"
    with capture(model, [name]) as clean:
        model(x)
    with scale(model, name, [3], 2.0), capture(model, [name]) as doubled:
        model(x)
    assert torch.equal(doubled[name][..., 3], 2 * clean[name][..., 3])
    with capture(model, ["blocks.0.hook_resid_post"]) as src:
        target_logits = model(y)
    with patch(model, {"blocks.0.hook_resid_post": src["blocks.0.hook_resid_post"]}):
        patched = model(x)
    # patching the whole stream after block 0 makes the rest of the forward that of `y`
    torch.testing.assert_close(patched, target_logits)


def test_interventions_leave_no_hook_behind_even_when_forward_raises(model):
    too_long = torch.zeros(1, 65, dtype=torch.long)  # max_seq_len is 64
    before = all_hooks(model)
    with pytest.raises(ValueError):
        with ablate(model, ["blocks.0.ffn.hook_out"]), capture(model, ["blocks.1.hook_resid_post"]):
            assert all_hooks(model) == before + 2
            model(too_long)
    assert all_hooks(model) == before


def test_unknown_hook_name_suggests_the_right_one(model):
    with pytest.raises(FFNLabError, match="did you mean 'blocks.0.ffn.hook_post'"):
        with hooks(model, {"blocks.0.ffn.hook_pots": lambda a: None}):
            pass


def test_capture_combines_uneven_batches_on_request(model):
    per_sequence = lambda name, a: a.norm(dim=(1, 2))  # noqa: E731 - keeps the batch dimension
    with capture(model, ["blocks.1.hook_resid_post"], reduce=per_sequence, combine="cat") as c:
        model(tokens(b=3, seed=1))
        model(tokens(b=1, seed=2))
    assert c["blocks.1.hook_resid_post"].shape == (4,)
    with capture(model, ["blocks.1.hook_resid_post"], reduce=per_sequence) as s:
        model(tokens(b=3, seed=1))
        model(tokens(b=1, seed=2))
    assert [p.shape[0] for p in s.parts("blocks.1.hook_resid_post")] == [3, 1]
    with pytest.raises(FFNLabError, match="use cache.parts"):
        s["blocks.1.hook_resid_post"]  # stacking (3,) and (1,) is impossible: a clear error
