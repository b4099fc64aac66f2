"""`ffnlab study --model`: a user's model joins the pretrained experiments that take one."""

import pytest

from ffnlab.errors import FFNLabError
from ffnlab.experiments.c4_pretrained import _added_ablation, lens_profile
from ffnlab.experiments.pretrained import user_decoders
from ffnlab.experiments.registry import Context
from ffnlab.model.hooks import ABLATIONS
from ffnlab.pretrained.sources import source_stamp
from ffnlab.study import run_study

from gguf_tiny import write_gguf
from hf_tiny import L, tiny_hf


@pytest.fixture
def user_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("FFNLAB_CACHE", str(tmp_path / "cache"))
    return write_gguf(tiny_hf("qwen2"), tmp_path / "tiny-qwen2.gguf")


def _ctx(tmp_path, *models):
    return Context("quick", (0,), tmp_path, options={"models": [{"model": str(m), "stamp": source_stamp(m)}
                                                                for m in models]}, progress=False, device="cpu")


def test_a_user_decoder_gets_the_ablation_and_the_lens(tmp_path, user_gguf):
    ctx = _ctx(tmp_path, user_gguf)
    tables, series, config, caveats = _added_ablation(ctx, 2, 16)
    assert caveats == ["tiny-qwen2: weights are dequantised F16 GGUF values, not the original checkpoint"]
    assert list(config) == ["tiny-qwen2"]
    assert tables[0].title.startswith("tiny-qwen2 (added with --model)") and len(tables[0].rows) == L
    assert all(len(row) == 1 + len(ABLATIONS) for row in tables[0].rows) and len(series[0].lines) == len(ABLATIONS)
    model = user_decoders(ctx)[0][0]
    lens = lens_profile(model, ctx, 2, 16)
    assert lens["kl_after"][-1] < 1e-3 and lens["top1_after"][-1] == 1.0  # the last stream is the prediction (bf16)


def test_a_model_without_a_tokenizer_is_left_out_with_a_reason(tmp_path):
    tiny_hf("llama").save_pretrained(tmp_path / "no-tok")
    models, skipped = user_decoders(_ctx(tmp_path, tmp_path / "no-tok"))
    assert models == [] and skipped == ["no-tok (added with --model) is left out: it has no tokenizer"]


def test_a_changed_model_gets_another_stamp(tmp_path):
    tiny_hf("llama").save_pretrained(tmp_path / "m")
    before = source_stamp(tmp_path / "m")
    tiny_hf("gpt2").save_pretrained(tmp_path / "m")
    assert source_stamp(tmp_path / "m") != before


def test_an_unsupported_model_stops_the_study_before_any_experiment(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "mamba"}')
    ran = []
    with pytest.raises(FFNLabError, match="unknown architecture 'mamba'"):
        run_study("quick", results=tmp_path / "r", models=[str(tmp_path / "m")], render=False, log=ran.append)
    assert ran == []
