import pytest
import torch

from ffnlab.analysis.rank import (VARIANTS, across_ffn, describe_ratio, dong_norm, floor_of, rank_collapse, residual_ratio,
                                  surgery)
from ffnlab.errors import FFNLabError
from ffnlab.model.config import FFNConfig, ModelConfig
from ffnlab.model.hooks import capture, hooks
from ffnlab.model.transformer import Transformer


def model(norm_position="pre", n_layers=2, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=n_layers, n_heads=4, max_seq_len=32,
                      norm_position=norm_position, ffn=FFNConfig(kind="mlp", ratio=2.0), **kw)
    return Transformer(cfg).eval()


def test_dong_norm_is_geometric_mean_of_one_and_inf_norms():
    x = torch.tensor([[1.0, -2.0], [3.0, 4.0], [0.0, 1.0]])
    # columns sums 4, 7 -> ||x||_1 = 7; row sums 3, 7, 1 -> ||x||_inf = 7
    assert float(dong_norm(x)) == pytest.approx(7.0)
    assert float(dong_norm(x)) == pytest.approx((torch.linalg.matrix_norm(x, 1) * torch.linalg.matrix_norm(x, float("inf"))).sqrt())


def test_residual_ratio_zero_for_identical_rows_and_positive_otherwise():
    same = torch.randn(1, 1, 8).expand(2, 5, 8)
    assert residual_ratio(same).abs().max() < 1e-12
    assert (residual_ratio(torch.randn(2, 5, 8)) > 0.3).all()


@pytest.mark.parametrize("layout", ["pre", "post"])
def test_surgery_identities(layout):
    m = model(layout)
    tokens = torch.randint(0, 50, (2, 10))
    names = ["blocks.1.hook_resid_pre", "blocks.1.attn.hook_out", "blocks.1.hook_resid_mid",
             "blocks.1.ffn.hook_in", "blocks.1.ffn.hook_out", "blocks.1.hook_resid_post"]
    with surgery(m, "attn+ffn"), capture(m, names) as c:
        m(tokens)
    torch.testing.assert_close(c["blocks.1.hook_resid_mid"], c["blocks.1.attn.hook_out"], rtol=0, atol=1e-6)
    with surgery(m, "attn+skip"), capture(m, names) as c:
        m(tokens)
    assert c["blocks.1.ffn.hook_out"].abs().max() == 0
    skip_source = c["blocks.1.hook_resid_mid"] if layout == "pre" else c["blocks.1.ffn.hook_in"]
    torch.testing.assert_close(c["blocks.1.hook_resid_post"], skip_source, rtol=0, atol=0)
    with surgery(m, "full"):
        torch.testing.assert_close(m(tokens), m(tokens), rtol=0, atol=0)
    # every hook is removed afterwards: the model is unchanged
    clean = m(tokens)
    with surgery(m, "attn-only"):
        changed = m(tokens)
    assert not torch.allclose(clean, changed)
    torch.testing.assert_close(m(tokens), clean, rtol=0, atol=0)


def test_pure_attention_collapses_and_skip_prevents_it():
    m = model(n_layers=12)
    tokens = torch.randint(0, 50, (4, 32))
    profiles = {v: rank_collapse(m, tokens, v) for v in VARIANTS}
    # Dong et al.: pure attention loses rank with depth; the skip connection keeps it
    assert profiles["attn-only"].mean[-1] < 0.01 * profiles["full"].mean[-1]
    assert profiles["attn-only"].mean[-1] < profiles["attn-only"].mean[0]
    assert profiles["attn+skip"].mean[-1] > 0.5
    assert len(profiles["full"].per_sequence) == 4 and len(profiles["full"].per_sequence[0]) == 12


def test_profile_is_the_same_for_any_batch_size():
    m = model(n_layers=3)
    tokens = torch.randint(0, 50, (6, 16))
    one = rank_collapse(m, tokens, "attn-only", batch_size=6)
    parts = rank_collapse(m, tokens, "attn-only", batch_size=4)  # batches of 4 and 2
    assert len(parts.per_sequence) == 6
    assert parts.mean == pytest.approx(one.mean, rel=1e-5)


def test_unknown_variant_is_a_user_error():
    with pytest.raises(FFNLabError, match="did you mean 'attn-only'"):
        with surgery(model(), "attn_only"):
            pass


def test_ratios_below_float_precision_are_named_collapsed():
    assert floor_of(torch.float32) == pytest.approx(10 * torch.finfo(torch.float32).eps)
    assert floor_of(torch.bfloat16) > 1000 * floor_of(torch.float32)
    assert describe_ratio(2e-7, floor_of(torch.float32)) == "collapsed (below float precision)"
    assert describe_ratio(0.25, floor_of(torch.float32)) == "0.25"
    # rows equal up to fp32 rounding read near eps, under the floor; the profile records the floor
    row = torch.randn(1, 1, 64)
    rounded = (row + 1e-3).expand(2, 16, 64) - 1e-3 + torch.randn(2, 16, 64) * 1e-8
    assert float(residual_ratio(rounded.float()).max()) < floor_of(torch.float32)
    assert rank_collapse(model(), torch.randint(0, 50, (2, 8))).floor == floor_of(torch.float32)


def test_across_ffn_is_one_where_the_ffn_adds_nothing_and_moves_where_it_does():
    m = model(n_layers=3)
    tokens = torch.randint(0, 50, (3, 16))
    with hooks(m, {f"blocks.{i}.ffn.hook_out": torch.zeros_like for i in range(3)}):
        assert across_ffn(m, tokens) == pytest.approx([1.0] * 3, abs=1e-9)
    assert all(abs(r - 1.0) > 1e-4 for r in across_ffn(m, tokens))
