import pytest
import torch

from ffnlab.analysis.lens import attention_shift, logit_lens
from ffnlab.model.config import FFNConfig, ModelConfig
from ffnlab.model.transformer import Transformer


def model(kind="mlp", norm_position="pre"):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=3, n_heads=4, max_seq_len=32,
                      norm_position=norm_position, ffn=FFNConfig(kind=kind, ratio=2.0))
    m = Transformer(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return m


def test_lens_after_last_ffn_is_the_final_prediction():
    m = model()
    result = logit_lens(m, torch.randint(0, 50, (5, 12)), batch_size=2)
    assert result.kl_after[-1] == pytest.approx(0.0, abs=1e-6)
    assert result.top1_after[-1] == pytest.approx(1.0)
    assert result.kl_before[-1] > 1e-3  # the last FFN does move the prediction
    # in each layer, what enters the FFN is what left attention: before(l+1) reads after(l)
    # through a different stream, so they differ, but every value is a valid KL / share
    assert all(k >= 0 for k in result.kl_before + result.kl_after)
    assert all(0 <= a <= 1 for a in result.top1_before + result.top1_after)
    assert result.kl_drop[-1] == pytest.approx(result.kl_before[-1], abs=1e-6)


def test_without_ffn_the_lens_does_not_move_across_it():
    m = model(kind="none")
    result = logit_lens(m, torch.randint(0, 50, (3, 12)))
    assert result.kl_drop == pytest.approx([0.0] * 3, abs=1e-6)
    assert result.top1_gain == pytest.approx([0.0] * 3, abs=1e-9)


def test_attention_shift_only_when_the_ffn_writes_something():
    tokens = torch.randint(0, 50, (4, 12))
    shift = attention_shift(model(), tokens, batch_size=2)
    assert len(shift.tv) == 3 and len(shift.tv[0]) == 2 and len(shift.tv[1]) == 1 and shift.tv[2] == []
    assert all(0 < x <= 1 for x in shift.next_layer)
    assert len(shift.later_layers) == 2
    none = attention_shift(model(kind="none"), tokens)
    assert max(none.later_layers) == 0.0
