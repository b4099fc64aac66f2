"""Every supported family, end to end: a tiny random checkpoint written locally loads through the
adapter, passes verify(), gives the plain HF logits with every hook attached, is counted exactly,
and the analyses run on it with the properties they must have."""

import json

import pytest
import torch

from ffnlab.analysis.ablation import ffn_ablation
from ffnlab.analysis.accounting import account
from ffnlab.analysis.lens import logit_lens
from ffnlab.analysis.memories import sub_updates, value_logits
from ffnlab.analysis.neurons import StatsConfig, neuron_stats
from ffnlab.analysis.tracing import trace
from ffnlab.cli import main
from ffnlab.model.contract import AnalysableModel, PretrainedAnalysable
from ffnlab.model.hooks import capture
from ffnlab.model.names import all_hooks, block_hook
from ffnlab.pretrained import FAMILIES, family_of, load

from hf_tiny import F, KINDS, L, V, saved_and_loaded, tokens

MAX_VERIFY_ERROR = 1e-5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def loaded(root):
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = saved_and_loaded(kind, root)
        return cache[kind]
    return get


def test_every_family_has_a_tiny_model_here():
    covered = {t for k in KINDS for t in [k.removesuffix("-headless")]}
    assert {t for fam in FAMILIES.values() for t in fam.model_types} <= covered
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "phi3", "gpt_neox", "gptj",
            "gpt2", "bert", "roberta", "distilbert"} <= set(FAMILIES)


@pytest.mark.parametrize("kind", KINDS)
def test_loads_verifies_and_gives_the_hf_logits_with_every_hook(loaded, kind):
    model, hf = loaded(kind)
    assert isinstance(model, AnalysableModel) and isinstance(model, PretrainedAnalysable)
    assert model.meta["architecture"] == kind.removesuffix("-headless")
    check = model.meta["hook_check"]
    assert max(check.values()) < MAX_VERIFY_ERROR, check
    x = tokens()
    with torch.no_grad():
        out = hf(input_ids=x)
        plain = out.logits if model.has_head else out.last_hidden_state
        names = [n for n in all_hooks(L) if not n.endswith("hook_pattern")]
        with capture(model, names) as c:
            hooked = model(x)
    torch.testing.assert_close(hooked, plain, rtol=0, atol=1e-5)
    assert len(c) == len(names)  # every hook fired (TransformerLens #1673: hooks that never fire)


@pytest.mark.parametrize("kind", KINDS)
def test_a_bf16_load_passes_its_check(loaded, root, kind):
    loaded(kind)  # written once
    model = load(root / kind, dtype="bfloat16", progress=False)
    assert model.meta["dtype"] == "bfloat16" and model(tokens()).dtype == torch.bfloat16
    assert max(model.meta["hook_check"].values()) < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", KINDS)
def test_on_cuda_the_check_passes_and_the_logits_are_the_cpu_ones(loaded, root, kind):
    cpu, _ = loaded(kind)
    model = load(root / kind, device="cuda", progress=False)  # verify() runs on the GPU
    with torch.no_grad():
        torch.testing.assert_close(model(tokens().cuda()).cpu(), cpu(tokens()), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_params_equal_the_count_hf_reports(loaded, root, kind, capsys):
    model, hf = loaded(kind)
    acc = account(model)
    assert acc.total == hf.num_parameters()  # tied weights once
    assert set(acc.components) <= {"embeddings", "attention", "ffn", "norms", "pooler", "head"}
    ffn = sum(v.numel() for i in range(L) for v in model.ffn_weights(i).values() if v is not None)
    assert acc.components["ffn"] == ffn
    assert main(["params", str(root / kind), "--json", "--seq-lens", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == hf.num_parameters() and report["family"] == model.family.name
    assert report["flops_per_token"][0]["ffn"] == 2 * sum(w.numel() for i in range(L)
                                                          for w in model.ffn_weights(i).values()
                                                          if w is not None and w.dim() == 2)
    if model.causal:  # the unembedding, tied or not, is counted once per token
        assert report["flops_per_token"][0]["head"] == 2 * V * model.d_model


@pytest.mark.parametrize("kind", KINDS)
def test_ablation_and_lens(loaded, kind):
    model, _ = loaded(kind)
    x = tokens(4, 10)
    if model.has_head:
        r = ffn_ablation(model, x, reference=tokens(4, 10, seed=7), batch_size=4)
        assert all(abs(d) > 1e-6 for d in r.increase["zero"]), r.increase  # every FFN matters to the loss
        lens = logit_lens(model, x)
        if model.pre_norm:  # the last block's output through the lens is the model's own prediction
            assert lens.kl_after[-1] < 1e-6 and lens.top1_after[-1] == 1.0
        assert all(k >= -1e-6 for k in lens.kl_before + lens.kl_after)
    else:
        with pytest.raises(Exception, match="no head"):
            model.unembed(torch.zeros(1, 1, model.d_model))


@pytest.mark.parametrize("kind", KINDS)
def test_memories_run_and_sub_updates_add_up(loaded, kind):
    model, _ = loaded(kind)
    stats = neuron_stats(model, tokens(1, 64).flatten(), seq_len=16, batch_size=2, cfg=StatsConfig(k=3),
                         dtype=None, progress=False)
    assert len(stats.layers) == L and stats.layers[0].n_neurons == F and stats.count == 64
    if not model.has_head:
        return
    assert value_logits(model, 1).shape == (F, V)
    ups = sub_updates(model, tokens(1, 6), layer=1, top=F)  # all F terms m_i v_i
    w = model.ffn_weights(1)
    with torch.no_grad(), capture(model, [block_hook(1, "ffn.hook_post")]) as c:
        model(tokens(1, 6))
    total = sum(u.coefficient * w["down"][:, u.neuron] for u in ups)
    torch.testing.assert_close(total, c[block_hook(1, "ffn.hook_post")][0, -1] @ w["down"].T, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", [k for k in KINDS if family_of(k.removesuffix("-headless")).causal])
def test_tracing_restores_the_prediction_from_the_last_state(loaded, kind):
    model, _ = loaded(kind)
    x = tokens(1, 8)[0]
    with torch.no_grad():
        answer = int(model(x[None])[0, -1].argmax())
    tr = trace(model, x, (1, 3), answer, noise=3.0, samples=2, window=1)
    # restoring the whole last hidden state at the last position gives back the clean prediction
    assert abs(float(tr.effects["resid"][-1, -1]) - tr.total_effect) < 1e-5
    assert tr.effects["mlp"].shape == (L, len(x))


def test_flops_follow_the_attention_width_and_the_sliding_windows():
    """Gemma 2 alternates sliding-window and global layers, and its heads need not span d_model."""
    from ffnlab.analysis.accounting import flops_per_token, keys_per_query
    from ffnlab.pretrained import PretrainedModel

    from hf_tiny import H, tiny_hf

    model = PretrainedModel(tiny_hf("gemma2", sliding_window=4, head_dim=16), None, {"name": "windows"})
    assert model.attention_windows() == [4, None, 4] and model.d_attn == H * 16 != model.d_model
    assert keys_per_query(16, 4) == (4 * 5 / 2 + 12 * 4) / 16 and keys_per_query(3, 4) == 2.0
    scores = flops_per_token(model, 16)["attention_scores"]
    assert scores == 4 * H * 16 * (2 * keys_per_query(16, 4) + keys_per_query(16))
    mistral = PretrainedModel(tiny_hf("mistral", sliding_window=4), None, {"name": "mistral"})
    assert mistral.attention_windows() == [4] * L
    assert PretrainedModel(tiny_hf("llama"), None, {}).attention_windows() == [None] * L
