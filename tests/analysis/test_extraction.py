import pytest
import torch

from ffnlab.analysis.extraction import blocked, extraction
from ffnlab.errors import FFNLabError
from ffnlab.model.hooks import capture

from fact_models import ANSWERS, SUBJECT_POS, V, FactModel, prompt


@pytest.mark.parametrize("store", ["mlp", "attn"])
def test_knocking_out_the_edge_that_moves_the_attribute_removes_the_answer_and_nothing_else_does(store):
    model = FactModel(store).eval()
    ex = extraction(model, prompt(1), (SUBJECT_POS, SUBJECT_POS + 1), ANSWERS[1], window=1)
    assert ex.p_clean > 0.99
    subject, other, ffn = (ex.effects[k].tolist() for k in ("attn from subject", "attn from non-subject",
                                                             "ffn at last"))
    # layer 2 moves the attribute from the subject to the last token: blocking that edge leaves a uniform guess
    assert subject[2] == pytest.approx(1 / V / ex.p_clean - 1, abs=1e-4)
    assert subject[:2] == pytest.approx([0, 0], abs=1e-6)  # earlier layers never read the subject there
    assert other == pytest.approx([0, 0, 0], abs=1e-6)  # nor does anything read the other tokens
    assert ffn == pytest.approx([0, 0, 0], abs=1e-6)  # the MLPs at the last token add nothing


def test_a_window_knocks_out_every_layer_it_covers():
    model = FactModel("mlp").eval()
    ex = extraction(model, prompt(0), (SUBJECT_POS, SUBJECT_POS + 1), ANSWERS[0], window=3)
    # windows (ROME's, clamped): [0, 2), [0, 3), [1, 3): only the first misses layer 2
    assert ex.effects["attn from subject"][0] == pytest.approx(0, abs=1e-6)
    assert (ex.effects["attn from subject"][1:] < -0.9).all()


def test_bad_spans_are_user_errors():
    model = FactModel("mlp").eval()
    with pytest.raises(FFNLabError, match="subject span"):
        extraction(model, prompt(0), (1, 4), ANSWERS[0], window=1)
    with pytest.raises(FFNLabError, match="window"):
        extraction(model, prompt(0), (1, 2), ANSWERS[0], window=0)


def test_pretrained_knockout_goes_through_the_attention_mask(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "pretrained"))
    from hf_tiny import saved_and_loaded

    model, _ = saved_and_loaded("llama", tmp_path)
    toks = torch.randint(3, 97, (2, 7), generator=torch.Generator().manual_seed(0))
    name = "blocks.1.attn.hook_pattern"
    with torch.no_grad():
        with capture(model, [name]) as clean:
            model(toks)
        with blocked(model, {1: [1]}, 6, [2, 3]), capture(model, [name]) as knocked:
            model(toks)
    before, after = clean[name].float(), knocked[name].float()  # (B, H, T, T)
    assert torch.allclose(after[0], before[0], atol=1e-5)  # row 0 not blocked
    assert after[1, :, 6, 2:4].abs().max() < 1e-6
    expected = before[1, :, 6] / (1 - before[1, :, 6, 2:4].sum(-1, keepdim=True))
    expected[:, 2:4] = 0
    assert torch.allclose(after[1, :, 6], expected, atol=1e-4)  # the rest renormalised, as -inf scores give
    assert torch.allclose(after[1, :, :6], before[1, :, :6], atol=1e-5)  # other queries untouched
