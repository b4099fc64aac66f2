"""The study's analyses on real pretrained models: all-MiniLM-L6-v2 (BERT) and SmolLM2-135M (Llama).

    pretrained-ffn-ablation    C4  per-layer FFN ablation (zero/mean/resample): SmolLM2 loss increase,
                                   MiniLM change of the sentence-similarity structure
    pretrained-logit-lens      C4  SmolLM2's prediction read before and after each FFN

C5's `pretrained-accounting` lives in `c5_accounting`, C2's `pretrained-rank-collapse` in `c2_pretrained`.

The models come from `ffnlab.pretrained`; SmolLM2's weights are dequantised Q4_1 values,
which every result says. Text is the validation split of the study's corpus.

`ffnlab study --model PATH_OR_ID` adds the user's models (option "models", read by `user_models`
only): accounting counts them, and causal ones with a head get the per-layer FFN ablation and
the logit lens. They are shown beside the packaged models and left out of the verdicts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ffnlab.analysis.ablation import ffn_ablation, ffn_out
from ffnlab.analysis.lens import logit_lens
from ffnlab.data.corpus import load_corpus
from ffnlab.device import module_device
from ffnlab.experiments.registry import Context, experiment
from ffnlab.model.hooks import ABLATIONS, ablate, capture
from ffnlab.pretrained import PretrainedModel, load
from ffnlab.results import Line, Result, Series, Table

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


# -- C4: per-layer FFN ablation --------------------------------------------------------------
def _pooled(model: PretrainedModel, tokens: Tensor) -> Tensor:
    """Mean-pooled, L2-normalised embeddings (all-MiniLM-L6-v2's own pooling) of unpadded (N, T) -> (N, D)."""
    return torch.nn.functional.normalize(model(tokens.to(module_device(model))).float().mean(1), dim=-1)


def _similarity_structure(e: Tensor) -> Tensor:
    """Upper-triangle pairwise cosine similarities (N(N-1)/2,)."""
    i, j = torch.triu_indices(e.shape[0], e.shape[0], 1)
    return (e @ e.T)[i, j]


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


@torch.no_grad()
def minilm_ablation(model: PretrainedModel, tokens: Tensor, reference: Tensor, seed: int) -> dict[str, list[float]]:
    """Per layer and method: Pearson r of the pairwise-similarity structure, ablated vs clean.

    `tokens` and `reference` are (N, T) passages without padding; mean and resample
    replacements come from `reference`.
    """
    clean = _similarity_structure(_pooled(model, tokens))
    names = [ffn_out(i) for i in range(model.n_layers)]
    with capture(model, names) as refs:
        model(reference.to(module_device(model)))
    out: dict[str, list[float]] = {how: [] for how in ABLATIONS}
    for how in ABLATIONS:
        for i, name in enumerate(names):
            gen = torch.Generator().manual_seed(seed * 1000 + i)
            with ablate(model, [name], how, reference=dict(refs), generator=gen):
                out[how].append(_pearson(clean, _similarity_structure(_pooled(model, tokens))))
    return out


def decoder_ablation(model: PretrainedModel, ctx: Context, n: int, length: int):
    """(clean loss, {how: loss increase per layer}, per-seed results), averaged over the seeds."""
    per_seed = []
    for seed in ctx.seeds:
        tokens = token_windows(model, ctx, n, length, seed)
        reference = token_windows(model, ctx, n, length, 10_000 + seed)
        per_seed.append(ffn_ablation(model, tokens, reference, batch_size=8, seed=seed, progress=ctx.progress))
    clean = sum(r.clean for r in per_seed) / len(per_seed)
    inc = {how: [sum(r.increase[how][i] for r in per_seed) / len(per_seed) for i in range(model.n_layers)]
           for how in ABLATIONS}
    return clean, inc, per_seed


def _added_ablation(ctx: Context, n: int, length: int) -> tuple[list[Table], list[Series], dict, list[str]]:
    """The per-layer ablation table and series of each causal model added with --model, and what was left out."""
    tables, series, config = [], [], {}
    models, skipped = user_decoders(ctx)
    for model in models:
        name, layers = model.meta["name"], list(range(model.n_layers))
        clean, inc, _ = decoder_ablation(model, ctx, n, length)
        tables.append(Table(f"{name} (added with --model): loss increase (nats) per ablated FFN", ["layer", *ABLATIONS],
                            [[i] + [inc[how][i] for how in ABLATIONS] for i in layers], note=f"clean loss {clean:.4f} nats"))
        series.append(Series(f"{name}: loss increase when one FFN is ablated", "layer", "Δ loss (nats)",
                             [Line(how, layers, inc[how]) for how in ABLATIONS]))
        config[name] = _meta(model)
    return tables, series, config, skipped


@experiment("pretrained-ffn-ablation", claim="C4", version=2, order=56,
            title="Per-layer FFN ablation in SmolLM2-135M and all-MiniLM-L6-v2")
def pretrained_ffn_ablation(ctx: Context) -> Result:
    n, length = (4, 64) if ctx.quick else (32, 128)
    smol = load(SMOLLM2, dtype=torch.bfloat16, progress=ctx.progress, device=ctx.device)
    clean, inc, per_seed = decoder_ablation(smol, ctx, n, length)
    rows = [[i] + [inc[how][i] for how in ABLATIONS] for i in range(smol.n_layers)]
    minilm = load(MINILM, progress=ctx.progress, device=ctx.device)
    n_sent = 64 if ctx.quick else 256
    corr = [minilm_ablation(minilm, passages(minilm, ctx, n_sent, 32, seed),
                            passages(minilm, ctx, n_sent, 32, 50_000 + seed), seed) for seed in ctx.seeds]
    r = {how: [sum(c[how][i] for c in corr) / len(corr) for i in range(minilm.n_layers)] for how in ABLATIONS}
    worst = max(range(smol.n_layers), key=lambda i: inc["zero"][i])
    added_tables, added_series, added_config, skipped = _added_ablation(ctx, n, length)
    return Result(
        name="", claim="", title="", version=0, mode=ctx.mode,
        method=f"SmolLM2 (bf16): mean next-token loss on {n} validation windows of {length} tokens with each "
               "layer's FFN output (ffn.hook_out) replaced by zero, by its mean over a held-out reference batch, "
               "or by a random reference sequence's output at the same position. MiniLM (no MLM head): "
               f"Pearson r between the pairwise cosine similarities of the mean-pooled embeddings of {n_sent} "
               "validation passages of 32 tokens, clean vs with one FFN ablated (1 = structure unchanged).",
        reason=f"clean SmolLM2 loss {clean:.3f} nats; largest zero-ablation increase at layer {worst} "
               f"(+{inc['zero'][worst]:.3f}); MiniLM similarity structure r from "
               f"{min(r['zero']):.3f} to {max(r['zero']):.3f} under zero ablation",
        tables=[Table("SmolLM2-135M: loss increase (nats) per ablated FFN", ["layer", *ABLATIONS], rows,
                      note=f"clean loss {clean:.4f} nats"),
                Table("all-MiniLM-L6-v2: similarity-structure correlation with one FFN ablated",
                      ["layer", *ABLATIONS], [[i] + [r[h][i] for h in ABLATIONS] for i in range(minilm.n_layers)]),
                *added_tables],
        series=[Series("SmolLM2-135M: loss increase when one FFN is ablated", "layer", "Δ loss (nats)",
                       [Line(how, list(range(smol.n_layers)), inc[how]) for how in ABLATIONS]),
                Series("all-MiniLM-L6-v2: similarity structure kept with one FFN ablated", "layer", "Pearson r",
                       [Line(how, list(range(minilm.n_layers)), r[how]) for how in ABLATIONS]),
                *added_series],
        caveats=_caveats(smol) + ["one FFN is ablated at a time; effects of several FFNs need not add up"] + skipped,
        config={"smollm2": _meta(smol), "minilm": _meta(minilm), "added": added_config, "windows": n, "length": length,
                "sentences": n_sent, "clean_loss_per_seed": [r.clean for r in per_seed]},
    )


# -- C4: logit lens --------------------------------------------------------------------------
def lens_profile(model: PretrainedModel, ctx: Context, n: int, length: int) -> dict[str, list[float]]:
    """Per layer, averaged over the seeds: KL and top-1 agreement before and after each FFN."""
    results = [logit_lens(model, token_windows(model, ctx, n, length, seed)) for seed in ctx.seeds]
    return {attr: [sum(getattr(r, attr)[i] for r in results) / len(results) for i in range(model.n_layers)]
            for attr in ("kl_before", "kl_after", "top1_before", "top1_after")}


LENS_COLUMNS = ["layer", "KL before", "KL after", "KL drop", "top-1 before", "top-1 after"]


def _lens_rows(p: dict[str, list[float]]) -> list[list[float]]:
    return [[i, b, a, b - a, tb, ta] for i, (b, a, tb, ta)
            in enumerate(zip(p["kl_before"], p["kl_after"], p["top1_before"], p["top1_after"]))]


@experiment("pretrained-logit-lens", claim="C4", version=2, order=58,
            title="Logit lens before and after each FFN in SmolLM2-135M")
def pretrained_logit_lens(ctx: Context) -> Result:
    n, length = (4, 64) if ctx.quick else (32, 128)
    smol = load(SMOLLM2, dtype=torch.bfloat16, progress=ctx.progress, device=ctx.device)
    p = lens_profile(smol, ctx, n, length)
    kl_b, kl_a, t_b, t_a = p["kl_before"], p["kl_after"], p["top1_before"], p["top1_after"]
    drops = [b - a for b, a in zip(kl_b, kl_a)]
    layers = list(range(smol.n_layers))
    helped = sum(d > 0 for d in drops)
    models, skipped = user_decoders(ctx)
    added = {m.meta["name"]: (m, lens_profile(m, ctx, n, length)) for m in models}
    return Result(
        name="", claim="", title="", version=0, mode=ctx.mode,
        method=f"On {n} validation windows of {length} tokens, the stream just before (resid_mid) and just after "
               "(resid_post) each FFN is read through SmolLM2's final RMSNorm and head; KL(final || lens) and "
               "top-1 agreement with the model's own prediction.",
        reason=f"{helped} of {smol.n_layers} FFNs move the lens towards the final prediction (KL falls); "
               f"largest KL drop {max(drops):.3f} nats at layer {drops.index(max(drops))}",
        tables=[Table("Logit lens around each FFN", LENS_COLUMNS, _lens_rows(p)),
                *[Table(f"{name} (added with --model): logit lens around each FFN", LENS_COLUMNS, _lens_rows(q),
                        note=f"{m.family.block} blocks" + ("; in parallel blocks 'before' is resid_pre + attn_out, "
                                                           "which the FFN does not read" if m.block_form == "parallel"
                                                           else ""))
                  for name, (m, q) in added.items()]],
        series=[Series("SmolLM2-135M: KL(final || lens) before and after each FFN", "layer", "KL (nats)",
                       [Line("before FFN", layers, kl_b), Line("after FFN", layers, kl_a)]),
                Series("SmolLM2-135M: top-1 agreement with the final prediction", "layer", "agreement",
                       [Line("before FFN", layers, t_b), Line("after FFN", layers, t_a)]),
                *[Series(f"{name}: KL(final || lens) before and after each FFN", "layer", "KL (nats)",
                         [Line("before FFN", list(range(m.n_layers)), q["kl_before"]),
                          Line("after FFN", list(range(m.n_layers)), q["kl_after"])])
                  for name, (m, q) in added.items()]],
        caveats=_caveats(smol) + ["bf16 forward; the lens uses the model's own final norm and tied head"] + skipped,
        config={"smollm2": _meta(smol), "added": {k: _meta(m) for k, (m, _) in added.items()}, "windows": n,
                "length": length},
    )
