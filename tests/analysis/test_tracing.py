import pytest
import torch

from ffnlab.analysis.tracing import embedding_std, position_group, trace
from ffnlab.errors import FFNLabError
from ffnlab.model import FFNConfig, Transformer, hooks, patch, preset, capture


def tiny(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(preset("tiny", n_layers=3, ffn=FFNConfig(kind="mlp", d_ff=96))).eval()


PROMPT = torch.randint(256, (9,), generator=torch.Generator().manual_seed(7))
SUBJECT = (3, 5)


def answer_of(model):
    with torch.no_grad():
        return int(model(PROMPT[None])[0, -1].argmax())


def test_restoring_the_last_state_recovers_everything_and_states_before_the_subject_nothing():
    model = tiny()
    noise = 3 * embedding_std(model, PROMPT[None])
    tr = trace(model, PROMPT, SUBJECT, answer_of(model), noise, samples=3, window=1, batch_size=40)
    assert tr.total_effect > 0
    # the head reads only the last position's final state: restoring it is the whole effect
    assert tr.effects["resid"][-1, -1] == pytest.approx(tr.total_effect, abs=1e-6)
    # causal attention: nothing before the subject sees the noise, so restoring it changes nothing
    for kind in ("resid", "mlp", "attn"):
        assert tr.effects[kind][:, : SUBJECT[0]].abs().max() < 1e-6


def test_without_attention_output_no_information_reaches_the_last_position():
    model = tiny()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.proj.weight.zero_()
    tr = trace(model, PROMPT, SUBJECT, answer_of(model), noise=1.0, samples=2)
    assert tr.total_effect == pytest.approx(0, abs=1e-6)
    assert all(e.abs().max() < 1e-6 for e in tr.effects.values())


def test_batched_rows_match_one_restoration_done_by_hand():
    model = tiny(1)
    answer, noise = answer_of(model), 0.5
    tr = trace(model, PROMPT, SUBJECT, answer, noise, kinds=("mlp",), window=2, samples=1, seed=3)
    bank = torch.randn(1, 2, model.config.d_model, generator=torch.Generator().manual_seed(3)) * noise

    def corrupt(act):
        act = act.clone()
        act[:, 3:5] += bank[0]
        return act
    names = ["blocks.0.ffn.hook_out", "blocks.1.ffn.hook_out"]  # window 2 around layer 1: layers 0, 1
    with torch.no_grad():
        with capture(model, names) as clean:
            model(PROMPT[None])
        with hooks(model, {"hook_embed": corrupt}):
            p_corrupt = model(PROMPT[None])[0, -1].softmax(-1)[answer]
            with patch(model, {n: clean[n] for n in names}, positions=[6]):
                p_restored = model(PROMPT[None])[0, -1].softmax(-1)[answer]
    assert tr.p_corrupt == pytest.approx(float(p_corrupt), abs=1e-6)
    assert tr.effects["mlp"][1, 6] == pytest.approx(float(p_restored - p_corrupt), abs=1e-6)


def test_bad_input_is_a_user_error():
    model = tiny()
    with pytest.raises(FFNLabError, match="subject span"):
        trace(model, PROMPT, (5, 20), 1, 1.0)
    with pytest.raises(FFNLabError, match="unknown trace kind"):
        trace(model, PROMPT, SUBJECT, 1, 1.0, kinds=("mpl",))
    enc = Transformer(preset("tiny", arch="encoder"))
    with pytest.raises(FFNLabError, match="causal"):
        trace(enc, PROMPT, SUBJECT, 1, 1.0)


def test_position_groups():
    groups = [position_group(p, (1, 4), 7) for p in range(7)]
    assert groups == ["further", "first subject", "middle subject", "last subject", "first after", "further", "last"]


def test_fact_prompts_find_the_subject_tokens():
    from ffnlab.analysis.tracing import fact_prompts, known_facts, shipped_facts

    facts = shipped_facts()
    assert len(facts) >= 40 and all(f["subject"] in f["prompt"] for f in facts)
    words = {}
    encode = lambda s: [words.setdefault(w, len(words)) for w in s.split()]  # noqa: E731 (a word tokenizer)
    (fp,) = fact_prompts(encode, [{"prompt": "The capital of Spain is", "subject": "Spain", "answer": " Madrid"}])
    assert fp.subject == (3, 4) and fp.tokens[3] == words["Spain"] and fp.answer == words["Madrid"]
    model = tiny()
    with torch.no_grad():
        top = int(model(torch.tensor([fp.tokens]))[0, -1].argmax())
    right = fp.__class__(fp.text, fp.tokens, fp.subject, top)
    assert known_facts(model, [fp, right]) == ([right] if top != fp.answer else [fp, right])


# -- ROME's window and severed paths --------------------------------------------------------------
def rome(layer, window, num_layers):  # ROME's trace_important_window, as written there
    return range(max(0, layer - window // 2), min(num_layers, layer - (-window // 2)))


@pytest.mark.parametrize("window,n_layers", [(10, 48), (6, 30), (5, 12), (1, 3), (4, 3)])
def test_the_window_is_romes_clamped_at_both_edges(window, n_layers):
    from ffnlab.analysis.tracing import rome_window

    for layer in range(n_layers):
        assert rome_window(layer, window, n_layers) == rome(layer, window, n_layers)
    assert rome_window(0, 10, 48) == range(0, 5)  # clamped, not shifted to [0, 10)
    assert rome_window(47, 10, 48) == range(42, 48)
    assert rome_window(2, 6, 30) == range(0, 5)


def test_the_window_restores_only_romes_layers():
    model = tiny()  # 3 layers; window 2 around layer 0 is ROME's [0, 1), not [0, 2)
    answer, noise = answer_of(model), 0.5
    tr = trace(model, PROMPT, SUBJECT, answer, noise, kinds=("mlp",), window=2, samples=1, seed=3,
               positions=[-1])
    one = trace(model, PROMPT, SUBJECT, answer, noise, kinds=("mlp",), window=1, samples=1, seed=3,
                positions=[-1])
    assert tr.effects["mlp"][0, 0] == pytest.approx(float(one.effects["mlp"][0, 0]), abs=1e-6)


SEVERED_KINDS = ("resid", "resid-sever-mlp", "resid-sever-attn")


@pytest.mark.parametrize("store", ["mlp", "attn"])
def test_severed_paths_point_to_the_component_that_holds_the_fact(store):
    from fact_models import ANSWERS, SUBJECT_POS, FactModel, prompt

    model = FactModel(store).eval()
    tr = trace(model, prompt(2), (SUBJECT_POS, SUBJECT_POS + 1), ANSWERS[2], noise=3.0, kinds=SEVERED_KINDS,
               samples=20, positions=[SUBJECT_POS])
    assert tr.p_clean > 0.99 and tr.total_effect > 0.5
    resid, no_mlp, no_attn = (tr.effects[k][:, 0].tolist() for k in SEVERED_KINDS)
    # the subject's state after layer 0 carries the whole fact; after the lookup layer it carries it too
    assert resid[0] == pytest.approx(tr.total_effect, abs=1e-5)
    holder, other = (no_mlp, no_attn) if store == "mlp" else (no_attn, no_mlp)
    assert holder[0] == pytest.approx(0, abs=1e-5)  # freezing the lookup component undoes the restoration
    assert other[0] == pytest.approx(resid[0], abs=1e-5)  # freezing the other one changes nothing
    # restored after the lookup (layer 1), the frozen later components no longer matter
    assert holder[1] == pytest.approx(resid[1], abs=1e-5) and other[1] == pytest.approx(resid[1], abs=1e-5)


def test_severed_kinds_reproduce_a_hand_made_freeze():
    model = tiny(2)
    answer, noise = answer_of(model), 0.7
    tr = trace(model, PROMPT, SUBJECT, answer, noise, kinds=("resid-sever-mlp",), samples=1, seed=5,
               positions=[SUBJECT[1] - 1])
    bank = torch.randn(1, 2, model.config.d_model, generator=torch.Generator().manual_seed(5)) * noise

    def corrupt(act):
        act = act.clone()
        act[:, 3:5] += bank[0]
        return act
    mlps = [f"blocks.{i}.ffn.hook_out" for i in range(3)]
    with torch.no_grad():
        with capture(model, ["blocks.0.hook_resid_post"]) as clean:
            model(PROMPT[None])
        with capture(model, mlps) as frozen, hooks(model, {"hook_embed": corrupt}):
            p_corrupt = model(PROMPT[None])[0, -1].softmax(-1)[answer]
        with hooks(model, {"hook_embed": corrupt}), patch(model, dict(clean), positions=[4]), \
                patch(model, {n: frozen[n] for n in mlps[1:]}, positions=[4]):
            p = model(PROMPT[None])[0, -1].softmax(-1)[answer]
    assert tr.effects["resid-sever-mlp"][0, 0] == pytest.approx(float(p - p_corrupt), abs=1e-6)
