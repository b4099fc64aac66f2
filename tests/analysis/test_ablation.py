import copy

import pytest
import torch

from ffnlab.analysis.ablation import causal_lm_loss, ffn_ablation, mean_loss
from ffnlab.errors import FFNLabError
from ffnlab.model.config import FFNConfig, ModelConfig
from ffnlab.model.transformer import Transformer


def model(kind="mlp"):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=3, n_heads=4, max_seq_len=32,
                      ffn=FFNConfig(kind=kind, ratio=2.0))
    m = Transformer(cfg).eval()
    with torch.no_grad():  # larger FFN weights than at init, so that ablation matters
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return m


def test_zero_ablation_equals_a_model_with_that_ffn_zeroed():
    m = model()
    tokens, ref = torch.randint(0, 50, (6, 16)), torch.randint(0, 50, (6, 16))
    result = ffn_ablation(m, tokens, ref, batch_size=4)
    for layer in range(3):
        zeroed = copy.deepcopy(m)
        with torch.no_grad():
            zeroed.blocks[layer].ffn.fc_out.weight.zero_()
            zeroed.blocks[layer].ffn.fc_out.bias.zero_()
        assert result.loss["zero"][layer] == pytest.approx(mean_loss(zeroed, tokens, causal_lm_loss, 4), abs=1e-5)
    with torch.no_grad():
        assert result.clean == pytest.approx(float(causal_lm_loss(m, tokens)), abs=1e-5)
    assert all(abs(x) > 1e-2 for x in result.increase["zero"])  # every FFN matters in this model


def test_mean_ablation_with_constant_ffn_output_changes_nothing():
    m = model()
    with torch.no_grad():  # the FFN's output is its bias alone: the mean equals every output
        m.blocks[1].ffn.fc_out.weight.zero_()
        m.blocks[1].ffn.fc_out.bias.normal_(0, 1.0)
    tokens, ref = torch.randint(0, 50, (4, 16)), torch.randint(0, 50, (4, 16))
    result = ffn_ablation(m, tokens, ref, methods=("zero", "mean", "resample"))
    assert result.increase["mean"][1] == pytest.approx(0.0, abs=1e-5)
    assert result.increase["resample"][1] == pytest.approx(0.0, abs=1e-5)
    assert abs(result.increase["zero"][1]) > 1e-3


def test_custom_loss_function_is_used():
    m = model()
    tokens = torch.randint(0, 50, (4, 16))
    first_token_logit = lambda mdl, t: mdl(t)[:, 0, 0].mean()  # noqa: E731
    result = ffn_ablation(m, tokens, methods=("zero",), loss_fn=first_token_logit)
    with torch.no_grad():
        assert result.clean == pytest.approx(float(m(tokens)[:, 0, 0].mean()), abs=1e-5)


def test_mean_ablation_without_reference_is_a_user_error():
    with pytest.raises(FFNLabError, match="reference"):
        ffn_ablation(model(), torch.randint(0, 50, (2, 8)), methods=("mean",))


def test_controlled_ablation_matches_plain_ablation_and_its_controls_hold():
    from ffnlab.analysis.ablation import controlled_ablation

    m = model()
    tokens, ref = torch.randint(0, 50, (6, 16)), torch.randint(0, 50, (6, 16))
    plain = ffn_ablation(m, tokens, ref, methods=("zero", "mean"), batch_size=4)
    ctl = controlled_ablation(m, tokens, ref, batch_size=4)
    assert ctl.clean == pytest.approx(plain.clean)
    for how in ("zero", "mean"):
        assert ctl.loss["ffn"][how] == pytest.approx(plain.loss[how], abs=1e-5)
    for layer in range(3):  # zeroing attention's output = a model whose attention output projection is zero
        zeroed = copy.deepcopy(m)
        with torch.no_grad():
            for p in zeroed.blocks[layer].attn.proj.parameters():
                p.zero_()
        assert ctl.loss["attn"]["zero"][layer] == pytest.approx(mean_loss(zeroed, tokens, causal_lm_loss, 4),
                                                                abs=1e-5)
    assert all(abs(x) > 1e-4 for x in ctl.increase("ffn", "random"))  # a same-size random push moves the loss
    # the reference is the evaluated sequence itself: per-position mean and resample give back the activation,
    # the global mean does not
    one = tokens[:1]
    same = controlled_ablation(m, one, one, methods=("mean", "mean-pos", "resample"), components=("ffn",))
    assert same.increase("ffn", "mean-pos") == pytest.approx([0.0] * 3, abs=1e-6)
    assert same.increase("ffn", "resample") == pytest.approx([0.0] * 3, abs=1e-6)
    assert all(abs(x) > 1e-3 for x in same.increase("ffn", "mean"))


def test_random_direction_of_a_silent_ffn_changes_nothing():
    from ffnlab.analysis.ablation import controlled_ablation

    m = model()
    with torch.no_grad():
        for p in m.blocks[2].ffn.fc_out.parameters():
            p.zero_()
    x = torch.randint(0, 50, (3, 16))
    r = controlled_ablation(m, x, x, methods=("random",), components=("ffn",))
    assert r.increase("ffn", "random")[2] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(FFNLabError, match="known"):
        controlled_ablation(m, x, x, methods=("shuffle",))
