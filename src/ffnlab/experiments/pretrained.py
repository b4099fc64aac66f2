"""The study's analyses on real pretrained models: all-MiniLM-L6-v2 (BERT) and SmolLM2-135M (Llama).

The experiments live beside their claims and use the shared helpers here: C4's
pretrained-ffn-ablation and pretrained-logit-lens in `c4_pretrained`, C5's
pretrained-accounting in `c5_accounting`, C2's pretrained-rank-collapse in `c2_pretrained`.

The models come from `ffnlab.pretrained`; SmolLM2's weights are dequantised Q4_1 values,
which every result says. Text is the test split of the study's corpus.

`ffnlab study --model PATH_OR_ID` adds the user's models (option "models", read by `user_models`
only): accounting counts them, and causal ones with a head get the per-layer FFN ablation and
the logit lens. They are shown beside the packaged models and left out of the verdicts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ffnlab.data.corpus import load_corpus
from ffnlab.experiments.registry import Context
from ffnlab.pretrained import PretrainedModel, load

SMOLLM2, MINILM = "smollm2", "minilm"
TAKES_MODELS = ("pretrained-accounting", "pretrained-ffn-ablation", "pretrained-logit-lens")  # read `user_models`


def user_models(ctx: Context) -> list[str]:
    """The models the user added with `ffnlab study --model` (the option's stamp keeps a changed model from
    reusing a stored result)."""
    return [m["model"] for m in ctx.options.get("models", [])]


def user_decoders(ctx: Context, dtype=torch.bfloat16) -> tuple[list[PretrainedModel], list[str]]:
    """The user's causal models with a head and a tokenizer, loaded (and verified) for the analyses of
    next-token loss; and caveats: each added model they leave out and why, and those of the ones kept."""
    out, skipped = [], []
    for source in user_models(ctx):
        model = load(source, dtype=dtype, progress=ctx.progress, device=ctx.device)
        why = ("it is not causal" if not model.causal else "it has no LM head" if not model.has_head
               else "it has no tokenizer" if model.tokenizer is None else None)
        if why:
            skipped.append(f"{model.meta['name']} (added with --model) is left out: {why}")
        else:
            out.append(model)
            skipped += _caveats(model)  # e.g. weights dequantised from a GGUF file
    return out, skipped


# -- shared helpers ------------------------------------------------------------------------
def _caveats(model: PretrainedModel) -> list[str]:
    out = []
    if "dequantised_from" in model.meta:
        out.append(f"{model.meta['name']}: weights are dequantised {model.meta['dequantised_from']} GGUF values, "
                   "not the original checkpoint")
    return out


def _meta(model: PretrainedModel) -> dict:
    return {k: v for k, v in model.meta.items() if k != "hook_check"}


def _test_text(ctx: Context, chars: int) -> str:
    corpus = load_corpus(ctx.data)
    return "\n".join(d.text for d in corpus.test)[:chars]


def token_windows(model: PretrainedModel, ctx: Context, n: int, length: int, seed: int) -> Tensor:
    """`n` windows (n, length) of test text tokenised by the model's own tokenizer."""
    ids = model.tokenizer(_test_text(ctx, 60 * n * length), add_special_tokens=False, verbose=False)["input_ids"]
    ids = torch.tensor(ids, dtype=torch.long)
    if ids.numel() < n * length:
        raise ValueError(f"validation text gives {ids.numel()} tokens, {n * length} needed")
    starts = torch.randperm(ids.numel() - length, generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([ids[s:s + length] for s in starts.tolist()])


def passages(model: PretrainedModel, ctx: Context, n: int, length: int, seed: int) -> Tensor:
    """`n` passages (n, length) of validation text as [CLS] tokens [SEP], all the same length.

    No padding: mean and resample ablation then draw only on real tokens.
    """
    tok = model.tokenizer
    body = token_windows(model, ctx, n, length - 2, seed)
    cls = torch.full((n, 1), tok.cls_token_id)
    sep = torch.full((n, 1), tok.sep_token_id)
    return torch.cat([cls, body, sep], 1)
