"""C4's analyses on pretrained adapters: path patching and the tuned lens read the same hook names there."""

import pytest
import torch

from ffnlab.analysis.paths import path_patching
from ffnlab.analysis.tuned_lens import LensConfig, lens_kl, train_translators
from ffnlab.experiments.c4_pretrained import MEASURE, PretrainedC4

from hf_tiny import tiny, tokens


@pytest.mark.parametrize("kind", ["llama", "bert-headless"])
def test_path_patching_on_adapters(kind):
    model, x = tiny(kind), tokens(4, 10)
    same = path_patching(model, x, x, batch_size=2)
    assert all(v < 1e-6 for layer in same.attn for v in layer)  # patched from the same input: nothing moves
    other = path_patching(model, x, tokens(4, 10, seed=5), batch_size=2)
    assert min(min(layer) for layer in other.attn) > 1e-3
    assert other.source[0] == "hook_embed" and all(-1 <= s <= 1 for layer in other.selectivity() for s in layer)


def test_parallel_blocks_ffn_does_not_read_its_attention():
    """GPT-J's FFN reads the block input, not attention's output: path patching says so exactly."""
    model, x = tiny("gptj"), tokens(3, 10)
    r = path_patching(model, x, tokens(3, 10, seed=5))
    assert all(v == 0.0 for layer in r.attn for v in layer)
    assert min(min(layer) for layer in r.random) == 0.0  # whatever is added to attention's output never reaches it


def test_tuned_lens_on_an_adapter_lowers_training_kl_and_leaves_the_model_alone():
    model = tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = [tokens(4, 12, seed=s) for s in range(3)]
    lens, alias, history = train_translators(model, train, LensConfig(steps=25), layers=[1])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert history[-1] < history[0]
    r = lens_kl(model, train[0], lens, alias, layers=[1])
    assert r.mean("tuned", "mid")[0] < r.mean("logit", "mid")[0]


def test_methods_text_follows_the_config():
    quick, full = MEASURE["quick"], MEASURE["full"]
    assert "No tuned lens" in quick.lens_method(4, 64) and "Tuned lens at layers 5, 10" in full.lens_method(32, 128)
    assert quick.ablation_method() != PretrainedC4(4, 64, 1, 8, 32, 64).ablation_method()
    assert "every layer" in PretrainedC4(4, 64, 1, 8, 32, 64).ablation_method()


def test_encoder_ablation_with_controls_on_an_adapter():
    from ffnlab.experiments.c4_pretrained import minilm_ablation

    model, x = tiny("bert-headless"), tokens(6, 10)
    for comp in ("ffn", "attn"):
        r = minilm_ablation(model, x, x[:1], seed=0, component=comp,
                            methods=("zero", "mean-pos", "resample", "random"))
        assert all(len(v) == 3 and all(-1 <= c <= 1 + 1e-9 for c in v) for v in r.values())
        assert min(r["zero"]) < 1 - 1e-6  # zeroing a component changes the similarity structure (a little: random)
