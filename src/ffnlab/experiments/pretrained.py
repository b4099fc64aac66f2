"""The study's analyses on real pretrained models: all-MiniLM-L6-v2 (BERT) and SmolLM2-135M (Llama).

    pretrained-accounting      C5  parameter and FLOP shares vs the published BERT-base/GPT-2/SmolLM2 numbers
    pretrained-rank-collapse   C2  Dong et al.'s residual ratio on MiniLM, trained vs at initialisation

C4's pretrained experiments (pretrained-ffn-ablation, pretrained-logit-lens) are in
`ffnlab.experiments.c4_pretrained` and use the shared helpers here.

The models come from `ffnlab.pretrained`; SmolLM2's weights are dequantised Q4_1 values,
which every result says. Text is the test split of the study's corpus.

`ffnlab study --model PATH_OR_ID` adds the user's models (option "models", read by `user_models`
only): accounting counts them, and causal ones with a head get the per-layer FFN ablation and
the logit lens. They are shown beside the packaged models and left out of the verdicts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ffnlab.analysis.accounting import account, flops_per_token
from ffnlab.analysis.rank import VARIANTS, rank_collapse
from ffnlab.data.corpus import load_corpus
from ffnlab.experiments.registry import Context, experiment
from ffnlab.pretrained import PretrainedModel, load
from ffnlab.results import Anchor, Criterion, Line, Result, Series, Table

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


# -- C5: accounting --------------------------------------------------------------------------
def _meta_adapter(cfg, label: str) -> PretrainedModel:
    """An adapter over `cfg`'s model (headless for encoders) on the meta device: exact shapes, no weights."""
    from ffnlab.pretrained import meta_model

    return meta_model(cfg, names=[], name=label)


PUBLISHED = {  # STUDY.md, "Parameter shares"
    "BERT-base": ("109,482,240 params with pooler; FFN 51.8% of all, 66.7% of non-embedding", 0.518, 0.667),
    "GPT-2 small": ("124,439,808 params; FFN 45.6% of all", 0.456, None),
    "SmolLM2-135M": ("FFN ≈ 59% of all, 75% of non-embedding", 0.59, 0.75),
}


@experiment("pretrained-accounting", claim="C5", version=1, order=55, seeded=False,
            title="Parameter and FLOP shares of the FFN in real pretrained models")
def pretrained_accounting(ctx: Context) -> Result:
    import transformers as tf

    minilm = load(MINILM, verify=False, progress=ctx.progress, device=ctx.device)
    smol = load(SMOLLM2, verify=False, progress=ctx.progress, device=ctx.device)
    models = {
        "BERT-base": _meta_adapter(tf.BertConfig(), "BERT-base"),  # the default config is BERT-base
        "GPT-2 small": _meta_adapter(tf.GPT2Config(), "GPT-2 small"),  # ... and GPT-2 small
        "SmolLM2-135M": smol,
        "all-MiniLM-L6-v2": minilm,
    }
    from ffnlab.pretrained import open_meta

    added = {}
    for row, model in map(open_meta, user_models(ctx)):  # shapes only: no weights read
        added[row["name"] if row["name"] not in models | added else row["source"]] = model
    models.update(added)
    rows, flop_rows, anchors, ffn_share_ne = [], [], [], {}
    for label, model in models.items():
        acc = account(model)
        comps = acc.components
        ffn_share_ne[label] = acc.share_non_embedding("ffn")
        rows.append([label, acc.total, comps.get("embeddings", 0), comps.get("attention", 0), comps.get("ffn", 0),
                     100 * acc.share("ffn"), 100 * acc.share_non_embedding("ffn")])
        for t in (128, 512, 2048, 8192):
            f = flops_per_token(model, t)
            attn = f["attention_proj"] + f["attention_scores"]
            flop_rows.append([label, t, f["ffn"] / 1e6, attn / 1e6, 100 * f["ffn"] / sum(f.values())])
        if label in PUBLISHED:
            text, share, share_ne = PUBLISHED[label]
            ne = f", {100 * acc.share_non_embedding('ffn'):.1f}% of non-embedding" if share_ne else ""
            anchors.append(Anchor(f"STUDY.md parameter shares ({label})", text,
                                  f"{acc.total:,} params; FFN {100 * acc.share('ffn'):.1f}% of all{ne}"))
    crit = Criterion("FFN share of non-embedding parameters", ">", 0.5, "every packaged and reference model")
    ok = all(v > crit.threshold for k, v in ffn_share_ne.items() if k not in added)
    return Result(
        name="", claim="", title="", version=0, mode=ctx.mode,
        method="Exact parameter counts per component over named_parameters() (tied weights once) and "
               "forward FLOPs per token, on the packaged MiniLM and SmolLM2 and on BERT-base and GPT-2 "
               "small built from their default transformers configs on the meta device (no weights).",
        criterion=crit, verdict="supported" if ok else "not supported",
        reason="FFN share of non-embedding parameters: "
               + ", ".join(f"{k} {100 * v:.1f}%" for k, v in ffn_share_ne.items() if k not in added),
        tables=[Table("Parameters per component",
                      ["model", "total", "embeddings", "attention", "ffn", "ffn % of all", "ffn % of non-emb"], rows),
                Table("Forward FLOPs per token (M) by sequence length",
                      ["model", "T", "ffn MFLOP", "attention MFLOP", "ffn % of all"], flop_rows)],
        anchors=anchors, caveats=_caveats(smol) + [f"{k}: added with --model, shown but not in the verdict"
                                                   for k in added],
        config={"models": {k: _meta(m) for k, m in models.items()}},
    )


# -- C2: rank collapse -----------------------------------------------------------------------
@experiment("pretrained-rank-collapse", claim="C2", version=1, order=57,
            title="Rank collapse in all-MiniLM-L6-v2 under Dong et al.'s surgery")
def pretrained_rank_collapse(ctx: Context) -> Result:
    from transformers import BertModel

    trained = load(MINILM, progress=ctx.progress, device=ctx.device)
    torch.manual_seed(0)
    init = PretrainedModel(BertModel(trained.hf.config), None, {"name": "MiniLM at initialisation"}).eval()
    profiles = {}
    for label, model in (("trained", trained), ("init", init)):
        for seed in ctx.seeds:
            tokens = token_windows(trained, ctx, 32, 128, seed)  # Dong et al.: 32 sequences of 128 tokens
            for v in VARIANTS:
                p = rank_collapse(model, tokens, v, batch_size=len(tokens))  # one forward: 32 x 128 is small
                profiles.setdefault((label, v), []).append(p)
    layers = list(range(1, trained.n_layers + 1))
    lines, rows = [], []
    for (label, v), ps in profiles.items():
        mean = [sum(p.mean[i] for p in ps) / len(ps) for i in range(trained.n_layers)]
        embed = sum(p.embed for p in ps) / len(ps)
        lines.append(Line(f"{v} ({label})", [0, *layers], [embed, *mean]))
        rows.append([label, v, embed, *mean])
    final = {(lab, v): sum(p.mean[-1] for p in ps) / len(ps) for (lab, v), ps in profiles.items()}
    crit = Criterion("final ratio attn-only / full (trained)", "<", 0.1,
                     "pure attention must end with under a tenth of the full block's token diversity")
    ratio = final[("trained", "attn-only")] / final[("trained", "full")]
    return Result(
        name="", claim="", title="", version=0, mode=ctx.mode,
        method="Residual ratio ||res(H)||/||H|| (norm sqrt(||.||_1 ||.||_inf), res = H minus its row mean) after "
               "each block, on 32 validation windows of 128 tokens, for the block as trained, without the "
               "FFN (attn+skip), without the skip around attention (attn+ffn, Dong's SAN+MLP) and with "
               "neither (attn-only); the trained model and the same architecture at initialisation.",
        criterion=crit, verdict="supported" if ratio < crit.threshold else "not supported",
        reason=f"after {trained.n_layers} layers: attn-only {final[('trained', 'attn-only')]:.3g}, attn+ffn "
               f"{final[('trained', 'attn+ffn')]:.3g}, attn+skip {final[('trained', 'attn+skip')]:.3g}, full "
               f"{final[('trained', 'full')]:.3g} (trained)",
        tables=[Table("Residual ratio per layer (layer 0 = embeddings)",
                      ["model", "variant", "embed", *[f"L{i}" for i in layers]], rows)],
        series=[Series("all-MiniLM-L6-v2: rank collapse by surgery variant", "layer", "residual ratio", lines,
                       log_y=True)],
        anchors=[Anchor("Dong, Cordonnier, Loukas 2021", "pure attention collapses within a few layers; skip "
                        "connections prevent it; the MLP only slows it",
                        f"attn-only {final[('trained', 'attn-only')]:.2g} vs full {final[('trained', 'full')]:.2g} "
                        f"after {trained.n_layers} layers")],
        caveats=["post-LN blocks: the LayerNorms stay in every variant, as in Dong et al.'s BERT surgery"],
        config={"minilm": _meta(trained), "sequences": 32, "length": 128},
    )
