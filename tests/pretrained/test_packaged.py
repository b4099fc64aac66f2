"""Integration: the two packaged real models load offline and behave like trained models.

The first SmolLM2 load converts the Q4_1 GGUF once (about 20-60 s on 2 busy cores) and
caches it; later loads read the cached safetensors in about a second.
"""

import json

import pytest
import torch

from ffnlab.model.hooks import ablate, capture
from ffnlab.pretrained import load
from ffnlab.pretrained.sources import PACKAGED, package_dir

pytestmark = pytest.mark.slow

needs = {name: pytest.mark.skipif(package_dir(p.package) is None, reason=f"{p.package} not installed")
         for name, p in PACKAGED.items()}


@pytest.fixture(scope="module")
def minilm():
    return load("minilm", progress=False)


@pytest.fixture(scope="module")
def smol():
    return load("smollm2", dtype=torch.bfloat16, progress=False)


def _embed(model, texts):
    batch = model.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(batch["input_ids"], batch["attention_mask"])
    m = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)


@needs["minilm"]
def test_minilm_sentence_embeddings_rank_paraphrases_first(minilm):
    e = _embed(minilm, ["A man is playing a guitar.", "Someone plays the guitar.",
                        "The stock market fell sharply today."])
    para, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert para > 0.6 and unrelated < 0.3, (para, unrelated)
    assert minilm.meta["hook_check"]["logits with hooks"] == 0.0
    assert (minilm.n_layers, minilm.d_model, minilm.d_ff, minilm.causal) == (6, 384, 1536, False)


@needs["minilm"]
def test_minilm_hooks_agree_with_hf_hidden_states(minilm):
    x = minilm.tokenizer(["To be, or not to be, that is the question"], return_tensors="pt")["input_ids"]
    with torch.no_grad(), capture(minilm, ["hook_embed"] + [f"blocks.{i}.hook_resid_pre" for i in range(6)]
                                  + ["hook_final"]) as c:
        hidden = minilm.hf(input_ids=x, output_hidden_states=True).hidden_states
    assert torch.equal(c["hook_embed"], hidden[0])
    for i in range(6):
        assert torch.equal(c[f"blocks.{i}.hook_resid_pre"], hidden[i])
    assert torch.equal(c["hook_final"], hidden[6])


@needs["smollm2"]
def test_smollm2_is_a_working_language_model(smol):
    assert smol.meta["dequantised_from"] == "Q4_1" and smol.meta["dtype"] == "bfloat16"
    record = json.loads(open(f"{smol.meta['cache']}/ffnlab_conversion.json").read())
    assert record["parity_max_abs"] == 0.0  # the cached checkpoint gives the GGUF model's logits
    tok = smol.tokenizer
    x = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert tok.decode(smol(x)[0, -1].argmax()).strip() == "Paris"
    text = ("Now is the winter of our discontent made glorious summer by this sun of York; and all the clouds "
            "that lour'd upon our house in the deep bosom of the ocean buried.")
    ids = tok(text + " " + text, return_tensors="pt")["input_ids"]
    half = ids.shape[1] // 2
    with torch.no_grad():
        clean = _token_loss(smol, ids)
        with ablate(smol, ["blocks.0.ffn.hook_out"]):
            ablated = _token_loss(smol, ids)
    first, second = clean[: half - 1].mean().item(), clean[half:].mean().item()
    assert second < 1.0 < first, (first, second)  # it copies a passage it has just read (induction)
    assert ablated.mean() > clean.mean() + 1.0, (clean.mean(), ablated.mean())  # its first FFN is essential


def _token_loss(model, ids):
    return torch.nn.functional.cross_entropy(model(ids[:, :-1])[0].float(), ids[0, 1:], reduction="none")


@needs["smollm2"]
def test_smollm2_hooks_agree_with_hf_hidden_states(smol):
    x = torch.tensor([[1, 504, 3575, 282, 4649, 314]])
    names = [f"blocks.{i}.hook_resid_pre" for i in range(smol.n_layers)] + ["hook_final"]
    with torch.no_grad(), capture(smol, names) as c:
        hidden = smol.hf(input_ids=x, output_hidden_states=True).hidden_states
    for i in range(smol.n_layers):
        assert torch.equal(c[f"blocks.{i}.hook_resid_pre"], hidden[i])
    assert torch.equal(c["hook_final"], hidden[-1])
