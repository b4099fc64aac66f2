"""MoE dispatch: the padded (sync-free) path computes what the indexed loop computes, hooks included."""

import pytest
import torch

from ffnlab.model import FFNConfig, ModelConfig, ablate, capture
from ffnlab.model.transformer import make_ffn

D = 32


def moe(**changes) -> torch.nn.Module:
    cfg = ModelConfig(d_model=D, n_heads=4, ffn=FFNConfig(kind="moe", ratio=2.0, n_experts=4, top_k=2, **changes))
    return make_ffn(cfg, 0, {})


def on_both_paths(ffn, forward) -> dict:
    """`forward()` with each dispatch: {"indexed": ..., "padded": ...}."""
    out = {}
    for dispatch in ("indexed", "padded"):
        ffn.dispatch = dispatch
        out[dispatch] = forward()
    return out


def run(ffn, dispatch: str, x: torch.Tensor, names=("hook_pre", "hook_post")):
    ffn.dispatch = dispatch
    ffn.zero_grad(set_to_none=True)
    with capture(ffn, names) as cache:
        y = ffn(x)
    y.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in ffn.named_parameters() if p.grad is not None}
    return y.detach(), dict(cache), grads, ffn.dropped_fraction, ffn.aux_loss().detach()


@pytest.mark.parametrize("capacity_factor", [None, 1.0, 0.5])
def test_padded_dispatch_matches_the_indexed_loop(capacity_factor):
    torch.manual_seed(0)
    ffn = moe(capacity_factor=capacity_factor)
    x = torch.randn(3, 16, D)
    y_i, acts_i, grads_i, drop_i, aux_i = run(ffn, "indexed", x)
    y_p, acts_p, grads_p, drop_p, aux_p = run(ffn, "padded", x)
    torch.testing.assert_close(y_p, y_i, rtol=0, atol=1e-6)
    for name in acts_i:
        torch.testing.assert_close(acts_p[name], acts_i[name], rtol=0, atol=1e-6)
    assert grads_p.keys() == grads_i.keys()
    for name in grads_i:
        torch.testing.assert_close(grads_p[name], grads_i[name], rtol=1e-5, atol=1e-6)
    assert drop_p == drop_i and aux_p == aux_i
    assert (drop_i > 0) == (capacity_factor is not None and capacity_factor < 1.0 + 1e-9)


def test_padded_dispatch_honours_an_edit_of_hook_post():
    """Zeroing chosen neurons in hook_post changes the output identically on both paths."""
    torch.manual_seed(1)
    ffn = moe(capacity_factor=1.0)
    x = torch.randn(2, 12, D)

    def ablated():
        with torch.no_grad(), ablate(ffn, ["hook_post"], neurons=list(range(0, 4 * ffn.expert_width, 3))):
            return ffn(x)

    outs = on_both_paths(ffn, ablated)
    plain = ffn(x).detach()
    assert (outs["indexed"] - plain).abs().max() > 1e-3  # the edit matters
    torch.testing.assert_close(outs["padded"], outs["indexed"], rtol=0, atol=1e-6)


def test_dropped_fraction_counts_slots_over_capacity():
    ffn = moe(capacity_factor=0.5)  # capacity ceil(0.5 * 8 * 2 / 4) = 2 slots per expert, of 16
    torch.nn.init.zeros_(ffn.router.proj.weight)  # equal scores: every token picks experts 0 and 1
    ffn.dispatch = "padded"
    ffn(torch.randn(1, 8, D))
    assert ffn.dropped_fraction == pytest.approx(1 - 4 / 16)


def test_hooked_moe_runs_under_bf16_autocast_on_both_paths():
    """The dense hook views are float32 like the input, whatever autocast makes of the experts' outputs."""
    torch.manual_seed(2)
    ffn = moe(capacity_factor=1.0)
    x = torch.randn(2, 10, D)

    def hooked_bf16():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), \
                capture(ffn, ["hook_pre", "hook_post"]) as cache:
            y = ffn(x).float()
        assert cache["hook_pre"].dtype == cache["hook_post"].dtype == torch.float32
        return y, cache["hook_post"]

    outs = on_both_paths(ffn, hooked_bf16)
    torch.testing.assert_close(outs["padded"][0], outs["indexed"][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(outs["padded"][1], outs["indexed"][1], rtol=0, atol=0)
