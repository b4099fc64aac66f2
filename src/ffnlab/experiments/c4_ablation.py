"""C4: does each FFN post-process attention's output into what the next layers need?

On trained decoders: (1) ablate each layer's FFN (zero / mean / resample) and measure the
held-out loss increase; (2) logit lens (nostalgebraist 2020) just before and after each
FFN: KL to the final prediction and top-1 agreement; (3) the change of the later layers'
attention patterns (mean total variation per head) when an FFN is mean-ablated.
"""

from __future__ import annotations

import torch

from ffnlab.analysis.ablation import ffn_ablation, reference_activations
from ffnlab.analysis.lens import attention_shift, logit_lens
from ffnlab.experiments.common import (base_model, data, few_threads, fit, progress_bar, size, size_name,
                                      train_ahead, train_config)
from ffnlab.experiments.registry import Context, experiment
from ffnlab.experiments.verdict import decide, estimate
from ffnlab.model.hooks import ABLATIONS
from ffnlab.results import Anchor, Criterion, Line, Result, Series, Table

CRITERION = Criterion("smallest per-layer loss increase under mean ablation of the FFN", ">", 0.01,
                      "95% t-interval over seeds above 0.01 nats (every layer's FFN does input-dependent "
                      "work); partly if the average layer clears it; for 'supported' the next layer's "
                      "attention must also move (mean TV > 0.01) when an FFN is ablated")
N_SEQUENCES = {"test": 4, "quick": 32, "full": 64}


def token_batch(task, n: int, seq_len: int, seed: int, offset: int) -> torch.Tensor:
    """`n` held-out sequences (n, seq_len); `offset` keeps evaluation and reference batches apart."""
    return task.batch("test", offset, n, seq_len, seed)[0]


def analyse(model, tokens, reference, seed: int) -> dict:
    abl = ffn_ablation(model, tokens, reference, seed=seed)
    lens = logit_lens(model, tokens)
    refs = reference_activations(model, reference, list(range(model.n_layers)))
    shift = attention_shift(model, tokens, "mean", reference=refs, seed=seed)
    return {"clean": abl.clean, "increase": abl.increase, "lens": lens, "shift": shift}


@experiment("ffn-ablation", claim="C4", version=2, order=40,
            title="Per-layer FFN ablation, logit lens around each FFN, attention change downstream")
def ffn_ablation_experiment(ctx: Context) -> Result:
    task, s = data(ctx), size(ctx)
    cfg = base_model(ctx, task.vocab_size)
    n = N_SEQUENCES.get(size_name(ctx), 32)
    out = []
    train_ahead(ctx, task, [(cfg, train_config(ctx, seed), f"c4 mlp s{seed}") for seed in ctx.seeds])
    with few_threads():
        for seed in progress_bar(ctx.seeds, ctx, "C4 ffn ablation"):
            run = fit(ctx, cfg, train_config(ctx, seed), task, f"c4 mlp s{seed}")
            tokens = token_batch(task, n, s.seq_len, seed, 7000)
            reference = token_batch(task, n, s.seq_len, seed, 9000)
            with torch.no_grad():
                out.append(analyse(run.model, tokens, reference, seed))
    layers = list(range(cfg.n_layers))
    mean_inc = [r["increase"]["mean"] for r in out]
    est = [estimate(CRITERION.quantity, [min(v) for v in mean_inc], "nats"),
           estimate("average per-layer loss increase under mean ablation", [sum(v) / len(v) for v in mean_inc],
                    "nats"),
           estimate("next layer's attention change when an FFN is mean-ablated (mean TV)",
                    [sum(r["shift"].next_layer) / len(r["shift"].next_layer) for r in out]),
           estimate("average KL drop across an FFN (logit lens)",
                    [sum(r["lens"].kl_drop) / len(layers) for r in out], "nats")]
    verdict, reason = decide(CRITERION, est[0],
                             requirements=[(est[2].mean > 0.01, f"the next layer's attention moves "
                                                                f"(mean TV {est[2].mean:.3f} > 0.01)")],
                             partial=(est[1].mean > CRITERION.threshold,
                                      f"the average layer's FFN matters ({est[1].mean:.3f} nats > 0.01)"))

    def per_layer(get) -> list:
        return [estimate("", [get(r)[i] for r in out]) for i in range(len(get(out[0])))]

    abl_rows = []
    for i in layers:
        row = [i]
        for how in ABLATIONS:
            row.append(estimate("", [r["increase"][how][i] for r in out]).mean)
        lens = [estimate("", [getattr(r["lens"], k)[i] for r in out]).mean
                for k in ("kl_before", "kl_after", "top1_before", "top1_after")]
        nxt = estimate("", [r["shift"].next_layer[i] for r in out]).mean if i < len(layers) - 1 else None
        abl_rows.append(row + lens + [nxt])
    lines = [Line(how, [float(i) for i in layers], [e.mean for e in per_layer(lambda r, h=how: r["increase"][h])],
                  [e.ci_high - e.mean for e in per_layer(lambda r, h=how: r["increase"][h])]) for how in ABLATIONS]
    lens_lines = [Line(f"{k.replace('_', ' ')}", [float(i) for i in layers],
                       [e.mean for e in per_layer(lambda r, k=k: getattr(r["lens"], k))])
                  for k in ("kl_before", "kl_after")]
    return Result(
        name="", claim="", title="", version=0, mode=ctx.mode,
        method=f"{cfg.n_layers}-layer decoders (d={cfg.d_model}) trained {s.steps} steps; {n} held-out "
               f"sequences of {s.seq_len} tokens evaluated, a separate held-out batch as the mean/resample "
               "reference. Ablation replaces blocks.{i}.ffn.hook_out; the lens reads hook_resid_mid and "
               "hook_resid_post through the final norm and head.",
        criterion=CRITERION, verdict=verdict, reason=reason, estimates=est,
        tables=[Table("Per layer: loss increase (nats) by ablation, logit lens, next-layer attention change",
                      ["layer", *[f"{h} ablation" for h in ABLATIONS], "KL before FFN", "KL after FFN",
                       "top-1 before", "top-1 after", "next-layer attention TV"], abl_rows,
                      note=f"clean loss {sum(r['clean'] for r in out) / len(out):.3f} nats")],
        series=[Series("Loss increase when one FFN is ablated", "layer", "loss increase (nats)", lines, kind="bar"),
                Series("Logit lens around each FFN", "layer", "KL(final || lens) (nats)", lens_lines)],
        anchors=[Anchor("Geva et al. 2022 (FFN updates promote concepts in vocabulary space)",
                        "FFN sub-updates push the eventual prediction up in later layers",
                        f"KL to the final prediction falls by {est[3].mean:.3f} nats on average across an FFN")],
        caveats=["Zero ablation also removes the FFN's mean output (a bias the next layers rely on); mean "
                 "ablation isolates the input-dependent part, so the criterion uses it.",
                 "The logit lens is biased for early layers of small models; the before/after difference "
                 "within a layer is what is compared."],
        config={"model": cfg.to_dict(), "train": train_config(ctx, 0).to_dict(), "n_sequences": n,
                "attention_tv": [r["shift"].tv for r in out]},
    )
