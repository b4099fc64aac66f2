"""Claim C7 — FFNs as key-value memories — on SmolLM2-135M (and any model with the hook contract).

    c7-kv-memories     trigger contexts of every neuron over a corpus (one streaming pass),
                       values read in the vocabulary, key-value agreement per layer vs random
                       (Geva et al. 2021), promotion vs elimination by sub-updates (Geva et al. 2022)

The plumbing here (`memories`, `mark`) is what `ffnlab memories` and `ffnlab neuron` call; models
are opened, with their own tokenizers, by `ffnlab.open`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ffnlab import distributed as dist
from ffnlab.analysis.memories import agreement, layer_value_tokens, promotion, value_logits, value_tokens
from ffnlab.analysis.neurons import NeuronStats, StatsConfig, neuron_stats
from ffnlab.experiments.common import few_threads
from ffnlab.experiments.registry import Context, experiment
from ffnlab.experiments.verdict import decide, estimate
from ffnlab.open import Opened, open_model
from ffnlab.results import Anchor, Criterion, Line, Result, Series, Table


# -- plumbing shared with the CLI -----------------------------------------------------------------
def mark(opened: Opened, stats: NeuronStats, index: int, width: int = 12, style: str = "brackets") -> str:
    """A trigger context as text with its trigger token marked ([[tok]] or ANSI bold)."""
    ctx, at = stats.context(index, width)
    before, token = opened.decode(ctx[:at]), opened.decode(ctx[at:at + 1])
    left, right = ("\033[1m", "\033[0m") if style == "ansi" else ("[[", "]]")
    return (before + left + token + right).replace("\n", "⏎")


def memories(opened: Opened, tokens: Tensor, out: str | Path, cfg: StatsConfig = StatsConfig(), seq_len: int = 128,
             batch_size: int = 8, progress: bool = True, promote_tokens: Tensor | None = None) -> dict:
    """The streaming pass (resumable from `out`), then agreement (and promotion) per layer."""
    out = Path(out)
    resume = None
    if NeuronStats.saved(out) is not None:
        old = NeuronStats.load(out)
        if old.cfg == cfg and old.seq_len == seq_len and torch.equal(old.tokens, tokens):
            resume = old
    if resume is None or resume.count < (len(tokens) // seq_len) * seq_len:
        # under torch.distributed every rank streams its part; rank 0 saves the merged statistics
        stats = neuron_stats(opened.model, tokens, seq_len, batch_size, cfg, progress=progress, resume=resume,
                             checkpoint=lambda s: s.save(out, {"model": opened.name, "complete": False}))
        if dist.is_main():
            stats.save(out, {"model": opened.name, "complete": True})
    else:
        stats = resume
    if not dist.is_main():
        return {"stats": stats, "agreement": [], "promotion": []}
    rows, promo = [], []
    for layer in range(opened.model.n_layers):
        if promote_tokens is None:
            vt = layer_value_tokens(opened.model, layer)
        else:
            logits = value_logits(opened.model, layer)
            vt = value_tokens(logits)
            promo.append(promotion(opened.model, promote_tokens, layer, logits))
        rows.append(agreement(stats, layer, vt, opened.model.causal, opened.vocab_size))
    return {"stats": stats, "agreement": rows, "promotion": promo}


def neuron_examples(opened: Opened, stats: NeuronStats, picks: list[tuple[int, int]], n: int = 5) -> list[dict]:
    out = []
    for layer, i in picks:
        vt = value_tokens(value_logits(opened.model, layer, [i]), k=8)
        sign = torch.sign(stats.layers[layer].top_values[i, :1])
        out.append({"layer": layer, "neuron": i,
                    "triggers": [mark(opened, stats, int(j)) for j in stats.layers[layer].top_index[i, :n]],
                    "activations": [round(float(v), 3) for v in stats.layers[layer].top_values[i, :n]],
                    "promotes": [opened.decode([t]) for t in vt.promoted(sign)[0].tolist()]})
    return out


# -- experiments ------------------------------------------------------------------------------------
SMOLLM2 = "smollm2"
KV_CRITERION = Criterion("upper-third agreement / shuffled-pair agreement", ">", 2.0,
                         "one streaming pass; requirement: upper-third agreement above lower-third (Geva et al.)")
GEVA = "Geva et al. 2021 (16-layer LM, vocab 267k)"


@experiment("c7-kv-memories", claim="C7", version=1, order=70,
            title="FFN neurons as key-value memories: triggers, values and their agreement")
def kv_memories(ctx: Context) -> Result:
    n_tokens = 16_384 if ctx.quick else 262_144
    with few_threads():
        opened = open_model(ctx.options.get("model", SMOLLM2), progress=ctx.progress, device=ctx.device)
        tokens = opened.tokens_of(ctx.data, n_tokens)
        promote = tokens[-8 * 64:].view(8, 64)  # 512 positions for the promotion statistics
        res = memories(opened, tokens, ctx.results / "neurons" / f"{opened.name}-{n_tokens}", seq_len=128,
                       progress=ctx.progress, promote_tokens=promote)
    stats, ag, pr = res["stats"], res["agreement"], res["promotion"]
    n_layers = len(ag)
    table = Table("Key-value agreement per layer (value top-1 = next token of the top trigger)",
                  ["layer", "neurons", "agree %", "agree top-10 %", "shuffled %", "unigram %", "1/V %",
                   "same last token", "… random"],
                  [[a.layer, a.neurons, 100 * a.agree, 100 * a.agree_top10, 100 * a.shuffled, 100 * a.unigram,
                    100 * a.uniform, a.same_last, a.same_last_random] for a in ag])
    promo = Table("Sub-updates (Geva et al. 2022): z-scored score of the changed top-1 tokens in the "
                  "10 largest sub-updates", ["layer", "changed positions", "promoted (after)",
                                             "eliminated (before)"],
                  [[p.layer, p.changes, p.promoted, p.eliminated] for p in pr])
    x = [float(a.layer) for a in ag]
    series = [Series("Key-value agreement by layer", "layer", "% of neurons",
                     [Line("value top-1 = trigger's next token", x, [100 * a.agree for a in ag]),
                      Line("shuffled pairs", x, [100 * a.shuffled for a in ag]),
                      Line("unigram baseline", x, [100 * a.unigram for a in ag])]),
              Series("Shallow patterns: share of top-25 triggers ending in the same token", "layer", "share",
                     [Line("neurons", x, [a.same_last for a in ag]),
                      Line("random positions", x, [a.same_last_random for a in ag])])]
    low = sum(a.agree for a in ag[: n_layers // 3]) / max(1, n_layers // 3)
    high = sum(a.agree for a in ag[-(n_layers // 3):]) / max(1, n_layers // 3)
    best = max(range(n_layers), key=lambda i: ag[i].agree)
    shuffled_high = sum(a.shuffled for a in ag[-(n_layers // 3):]) / max(1, n_layers // 3)
    est = estimate(KV_CRITERION.quantity, [high / max(shuffled_high, 1e-12)])
    verdict, reason = decide(KV_CRITERION, est, requirements=[
        (high > low, f"upper-third agreement {100 * high:.2f}% > lower-third {100 * low:.2f}%")])
    picks = [(best, int(i)) for i in stats.layers[best].top_values[:, 0].abs().topk(3).indices] + [(0, 0), (1, 1)]
    return Result(
        name="c7-kv-memories", claim="C7", title="", version=1, mode=ctx.mode,
        method=(f"{opened.name}: one streaming pass over {stats.count:,} tokens ({stats.seq_len}-token windows of "
                "the study corpus) records every FFN neuron's top-25 activating tokens (|activation|, sign kept), "
                "mean, variance, sparsity and histogram. Each value vector is read through the model's final norm "
                "and head; agreement = share of neurons whose value's top token (sign-corrected) is the token after "
                "the neuron's top trigger. Promotion: over 512 positions, the tokens that become / stop being the "
                "top-1 across an FFN, scored in its 10 largest sub-updates (z over the vocabulary; 0 = random)."),
        criterion=KV_CRITERION, verdict=verdict, reason=reason, estimates=[est],
        tables=[table, promo], series=series,
        anchors=[Anchor(GEVA, "value top-1 = next token of top trigger: ≈0% in lower layers, ≈3.5% upper; "
                        "random 0.0004%",
                        f"{100 * low:.2f}% lower third, {100 * high:.2f}% upper third (peak {100 * ag[best].agree:.2f}% "
                        f"at layer {best}); 1/V = {100 / opened.vocab_size:.4f}%, unigram "
                        f"{100 * sum(a.unigram for a in ag) / n_layers:.3f}%"),
                 Anchor("Geva et al. 2022", "winning tokens promoted by top sub-updates; eliminated ones not "
                        "suppressed (score ≈ 0)",
                        "promoted z = " + ", ".join(f"{p.promoted:.2f}" for p in pr[-3:]) + " (last 3 layers); "
                        "eliminated z = " + ", ".join(f"{p.eliminated:.2f}" for p in pr[-3:]))],
        caveats=opened.caveats + [
            "Geva et al. read triggers as prefixes judged by humans; the same-last-token share is only an "
            "automatic proxy for 'shallow' patterns.",
            f"{stats.count:,} tokens of Shakespeare, not the model's training distribution."],
        extra={"neurons": neuron_examples(opened, stats, picks)},
        config={"model": opened.name, "tokens": stats.count, "k": stats.cfg.k, "seq_len": stats.seq_len})
