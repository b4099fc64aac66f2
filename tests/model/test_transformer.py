"""Architecture switches do what they say: positions, norms, skips, encoder vs decoder, sharing."""

import torch

from ffnlab.model import FFNConfig, Transformer, capture, count_params, preset
from ffnlab.model.attention import apply_rotary, rotary_tables


def tokens(b=2, t=12, seed=0):
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(seed))


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = rotary_tables(16, 64, 10000.0)
    q, k = torch.randn(16), torch.randn(16)

    def score(i, j):
        qi = apply_rotary(q.view(1, 1, 1, 16), cos[i:i + 1], sin[i:i + 1])
        kj = apply_rotary(k.view(1, 1, 1, 16), cos[j:j + 1], sin[j:j + 1])
        return (qi * kj).sum()

    torch.testing.assert_close(score(3, 1), score(40, 38))
    torch.testing.assert_close(score(10, 10), (q * k).sum())


def test_decoder_is_causal_and_encoder_is_not():
    torch.manual_seed(0)
    x = tokens()
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 256  # change only the last token
    for arch, positions in (("decoder", "rotary"), ("encoder", "learned")):
        model = Transformer(preset("tiny", arch=arch, positions=positions)).eval()
        same_prefix = torch.equal(model(x)[:, :-1], model(x2)[:, :-1])
        assert same_prefix == (arch == "decoder"), arch


def test_skip_switches():
    torch.manual_seed(0)
    model = Transformer(preset("tiny", attn_skip=False, ffn_skip=False)).eval()
    with capture(model, ["blocks.0.attn.hook_out", "blocks.0.hook_resid_mid",
                         "blocks.0.ffn.hook_out", "blocks.0.hook_resid_post"]) as c:
        model(tokens())
    assert torch.equal(c["blocks.0.hook_resid_mid"], c["blocks.0.attn.hook_out"])
    assert torch.equal(c["blocks.0.hook_resid_post"], c["blocks.0.ffn.hook_out"])


def test_no_norms_and_rmsnorm():
    for norm in ("none", "rmsnorm"):
        model = Transformer(preset("tiny", norm=norm))
        has_ln = any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
        has_rms = any(isinstance(m, torch.nn.RMSNorm) for m in model.modules())
        assert not has_ln and has_rms == (norm == "rmsnorm")
        assert torch.isfinite(model(tokens())).all()


def test_shared_ffn_is_one_set_of_weights_with_per_layer_hooks():
    cfg = preset("tiny", n_layers=3, ffn=FFNConfig(kind="shared", ratio=4.0))
    model = Transformer(cfg)
    assert all(block.ffn.core is model.shared_ffn for block in model.blocks)
    unshared = count_params(preset("tiny", n_layers=3))
    per_ffn = 2 * 64 * 256 + 256 + 64
    assert count_params(cfg) == unshared - 2 * per_ffn
    with capture(model, [f"blocks.{i}.ffn.hook_post" for i in range(3)]) as c:
        model(tokens())
    assert not torch.equal(c["blocks.0.ffn.hook_post"], c["blocks.2.ffn.hook_post"])
    wide = preset("tiny", n_layers=3, ffn=FFNConfig(kind="shared", ratio=4.0, width_mult=3.0))
    # one 3x-wide FFN has the weights of three; it saves two output biases (D each)
    assert count_params(wide) == count_params(preset("tiny", n_layers=3)) - 2 * 64


def test_per_layer_override_only_changes_that_layer():
    cfg = preset("tiny", ffn_overrides=((0, FFNConfig(kind="swiglu", d_ff=32)),))
    model = Transformer(cfg)
    assert model.blocks[0].ffn.kind == "swiglu" and model.blocks[1].ffn.kind == "mlp"


def test_weight_tying():
    tied = Transformer(preset("tiny"))
    untied = Transformer(preset("tiny", tie_embeddings=False))
    assert tied.head.weight is tied.tok.weight
    assert count_params(preset("tiny", tie_embeddings=False)) - count_params(preset("tiny")) == 256 * 64
    assert untied.head.weight is not untied.tok.weight
