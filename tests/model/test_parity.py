"""ffnlab's Transformer reproduces Hugging Face GPT-2 and BERT exactly (configs built locally)."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, GPT2Config, GPT2LMHeadModel, GPT2Model

from ffnlab.model import Transformer, count_params, preset
from ffnlab.model.convert import bert_config, bert_state_dict, gpt2_config, gpt2_state_dict, load_hf


def test_preset_counts_equal_hugging_face_defaults():
    with torch.device("meta"):
        bert, gpt2 = BertModel(BertConfig()), GPT2Model(GPT2Config())
    assert count_params(preset("bert-base")) == sum(p.numel() for p in bert.parameters()) == 109_482_240
    assert count_params(preset("gpt2-small")) == sum(p.numel() for p in gpt2.parameters()) == 124_439_808


def test_gpt2_logits_match():
    torch.manual_seed(0)
    hf_cfg = GPT2Config(vocab_size=101, n_positions=32, n_embd=48, n_layer=3, n_head=4,
                        resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    hf = GPT2LMHeadModel(hf_cfg).eval()
    cfg = gpt2_config(hf_cfg)
    ours = load_hf(Transformer(cfg), gpt2_state_dict(hf.state_dict(), cfg.n_layers)).eval()
    x = torch.randint(0, 101, (3, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_bert_mlm_logits_match(padded):
    torch.manual_seed(0)
    hf_cfg = BertConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=40, hidden_dropout_prob=0,
                        attention_probs_dropout_prob=0)
    hf = BertForMaskedLM(hf_cfg).eval()
    cfg = bert_config(hf_cfg)
    ours = load_hf(Transformer(cfg), bert_state_dict(hf.state_dict(), cfg.n_layers)).eval()
    x = torch.randint(0, 97, (2, 17))
    mask = torch.ones_like(x)
    if padded:
        mask[1, 11:] = 0
    with torch.no_grad():
        theirs = hf(input_ids=x, attention_mask=mask).logits
        mine = ours(x, attention_mask=mask)
    keep = mask.bool()
    torch.testing.assert_close(mine[keep], theirs[keep], rtol=0, atol=1e-5)


def test_bert_pooler_matches():
    torch.manual_seed(0)
    hf_cfg = BertConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=40)
    hf = BertModel(hf_cfg).eval()
    cfg = bert_config(hf_cfg, lm_head=False, pooler=True)
    ours = load_hf(Transformer(cfg), bert_state_dict(hf.state_dict(), cfg.n_layers)).eval()
    x = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        out = hf(input_ids=x)
        h = ours(x)
        torch.testing.assert_close(h, out.last_hidden_state, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.pooled(h), out.pooler_output, rtol=0, atol=1e-5)
