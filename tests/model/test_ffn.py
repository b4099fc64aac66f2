"""Every registered FFN variant satisfies the one contract (the tests iterate the registry)."""

import pytest
import torch

from ffnlab.model import FFN_KINDS, FFNConfig, ModelConfig, capture
from ffnlab.model.sizing import ffn_params, match_d_ff
from ffnlab.model.transformer import make_ffn

D = 32


def build(kind: str, **changes) -> torch.nn.Module:
    options = {"ratio": 2.0, "n_experts": 4, "top_k": 2, **changes}
    cfg = ModelConfig(d_model=D, n_heads=4, ffn=FFNConfig(kind=kind, **options))
    shared = {}
    ffn = make_ffn(cfg, 0, shared)
    if "core" in shared:  # a shared FFN's weights live in the model; keep them reachable here
        ffn.core_module = shared["core"]
    return ffn


@pytest.fixture(params=sorted(FFN_KINDS))
def kind(request):
    return request.param


def test_shape_and_hook_points(kind):
    torch.manual_seed(0)
    ffn = build(kind)
    x = torch.randn(2, 7, D)
    y = ffn(x)
    assert y.shape == x.shape
    names = {n for n, _ in ffn.named_modules()}
    assert {"hook_in", "hook_pre", "hook_post", "hook_out"} <= names
    assert ffn.values().shape == (ffn.d_ff, D)


def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(0)
    ffn = build(kind)
    x = torch.randn(4, 16, D)
    params = dict(ffn.named_parameters())
    if kind == "none":
        assert not params and torch.equal(ffn(x), torch.zeros_like(x))
        return
    assert params, "a variant with weights must expose them"
    ffn(x).square().sum().backward()
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{kind}: no gradient reaches {name}"


def test_seeded_determinism(kind):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        ffn = build(kind)
        outs.append(ffn(torch.randn(2, 5, D)))
    assert torch.equal(outs[0], outs[1])


def _perturb_others(x: torch.Tensor, t: int) -> torch.Tensor:
    x2 = x.clone()
    others = [i for i in range(x.shape[1]) if i != t]
    x2[:, others] = torch.randn_like(x2[:, others]) * 3
    return x2


def test_position_wise(kind):
    """Perturbing every other position leaves the output at position t unchanged, bit for bit."""
    torch.manual_seed(0)
    ffn = build(kind)
    x = torch.randn(2, 12, D)
    for t in (0, 5, 11):
        y, y2 = ffn(x), ffn(_perturb_others(x, t))
        if kind == "moe":
            # Routing of token t does not depend on the others; the expert matmuls see batches of
            # other sizes, where BLAS may pick another kernel: equal to float rounding.
            torch.testing.assert_close(y2[:, t], y[:, t], rtol=0, atol=1e-6)
        else:
            assert torch.equal(y2[:, t], y[:, t]), f"{kind} moved information between positions"


def test_moe_routing_is_position_wise():
    torch.manual_seed(0)
    ffn = build("moe")
    x = torch.randn(2, 12, D)
    with capture(ffn, ["router.hook_logits"]) as a:
        ffn(x)
    with capture(ffn, ["router.hook_logits"]) as b:
        ffn(_perturb_others(x, 4))
    assert torch.equal(a["router.hook_logits"][:, 4], b["router.hook_logits"][:, 4])


def test_capacity_limited_moe_is_not_position_wise():
    """With a capacity, whether token t is served depends on the tokens before it in the batch."""
    torch.manual_seed(0)
    capped, uncapped = build("moe", capacity_factor=1.0, top_k=1), build("moe", top_k=1)
    uncapped.load_state_dict(capped.state_dict())
    n, t = 16, 15
    candidates = torch.randn(100, D)
    expert = capped.router.proj(candidates).argmax(-1)
    x_t, other = candidates[0], candidates[expert != expert[0]][0]
    crowded = x_t.repeat(1, n, 1)  # every token wants x_t's expert: t comes last and is dropped
    spread = other.repeat(1, n, 1)  # the others want another expert, leaving x_t's free
    spread[0, t] = x_t
    y_crowded, y_spread = capped(crowded)[0, t], capped(spread)[0, t]
    assert torch.equal(y_crowded, torch.zeros(D)), "token t should have been dropped"
    assert y_spread.abs().max() > 1e-4, "token t should have been served"
    torch.testing.assert_close(uncapped(crowded)[0, t], uncapped(spread)[0, t], rtol=0, atol=1e-6)


def test_moe_aux_loss_is_one_when_balanced_and_uniform():
    """Switch aux = E * sum f_e P_e equals 1 (times the coefficient) for uniform routing."""
    ffn = build("moe", aux_loss_coef=1.0)
    torch.nn.init.zeros_(ffn.router.proj.weight)  # uniform probabilities
    ffn(torch.randn(1, 64, D))
    share = 1.0  # top-k of equal scores still counts every slot once
    assert ffn.aux_loss().item() == pytest.approx(share, rel=1e-6)


@pytest.mark.parametrize("kind", ["glu", "bilinear", "reglu", "geglu", "swiglu", "lowrank"])
def test_equal_parameter_helper(kind):
    ref = FFNConfig(kind="mlp", ratio=4.0)
    for d in (64, 256, 768):
        matched = match_d_ff(ref, kind, d)
        assert abs(ffn_params(matched, d) / ffn_params(ref, d) - 1) < 0.01


def test_gated_width_is_two_thirds():
    matched = match_d_ff(FFNConfig(kind="mlp", ratio=4.0, bias=False), "swiglu", 768)
    assert matched.d_ff == 2048  # 2/3 of 3072: Shazeer's matched width
