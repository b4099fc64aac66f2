"""C6: can the FFN be shrunk, shared or replaced? Held-out loss vs parameters, FLOPs, latency.

Trained on the same tokens and budget: width ratios 0, 1/2, 1, 2, 4, 8 (4 = baseline);
SwiGLU at the baseline's FFN parameters (Shazeer 2020); one FFN shared by every layer;
one wide shared FFN with the baseline's FFN parameters (Pires et al. 2023); MoE top-1 and
top-2 with the baseline's active FFN parameters; a low-rank FFN. After training, the
baseline's neurons are pruned 0..90% by mean |activation| vs at random (zeroed through
`ffn.hook_post`). The Pareto frontier (no other point with fewer parameters and lower
loss) is marked.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from ffnlab.analysis.ablation import causal_lm_loss, mean_loss
from ffnlab.analysis.accounting import flops_per_token
from ffnlab.device import module_device, synchronize
from ffnlab.experiments.common import (base_model, data, few_threads, fit, progress_bar, size, size_name,
                                      train_config, training_method)
from ffnlab.experiments.registry import Context, experiment
from ffnlab.experiments.verdict import decide, estimate
from ffnlab.model import ModelConfig, count_params, match_d_ff
from ffnlab.model.hooks import ablate, capture
from ffnlab.results import Anchor, Criterion, Line, Result, Series, Table
from ffnlab.model.names import block_hook

CRITERION = Criterion("held-out loss of one shared FFN minus the baseline (4x MLP in every layer)", "<", 0.05,
                      "95% t-interval over seeds below 0.05 nats; partly if pruning half the neurons by "
                      "activation, or shrinking the FFN to width ratio 1, costs less than 0.05 nats")
PRUNE = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
BASELINE = "ratio 4 (baseline)"
IN_VERDICT = (BASELINE, "one shared FFN", "ratio 1")  # the models the criterion uses; the rest draw the frontier
# left out of the quick size's frontier (the costliest to train, and not used by the criterion)
WIDE = "one wide shared FFN (matched params)"
NOT_QUICK = ("ratio 0.5", "ratio 2", "ratio 8", WIDE, "moe top-1 (matched active)")


def thin_frontier(ctx: Context) -> bool:
    """The quick size (the 20-minute study) trains a thinner frontier."""
    return size_name(ctx) == "quick"


def variants(base: ModelConfig) -> dict[str, ModelConfig]:
    d, n = base.d_model, base.n_layers
    f = base.ffn
    out = {"ratio 0 (no FFN)": base.with_ffn(kind="none")}
    for r in (0.5, 1, 2, 4, 8):
        out[BASELINE if r == 4 else f"ratio {r:g}"] = base.with_ffn(ratio=float(r))
    out["swiglu (matched params)"] = base.replace(ffn=match_d_ff(f, "swiglu", d))
    out["one shared FFN"] = base.with_ffn(kind="shared", inner="mlp")
    out[WIDE] = base.with_ffn(kind="shared", inner="mlp", width_mult=float(n))
    out["moe top-1 (matched active)"] = base.with_ffn(kind="moe", d_ff=4 * d, n_experts=4, top_k=1)
    out["moe top-2 (matched active)"] = base.with_ffn(kind="moe", d_ff=2 * d, n_experts=8, top_k=2)
    out["low-rank (rank d/4)"] = base.with_ffn(kind="lowrank", rank=max(1, d // 4))
    return out


@torch.no_grad()
def latency(model, tokens: torch.Tensor, reps: int = 5) -> float:
    """Median forward seconds for `tokens` (fp32, the current thread count, on the model's device)."""
    device = module_device(model)
    tokens = tokens.to(device)
    model(tokens)  # warm-up
    times = []
    for _ in range(reps):
        synchronize(device)
        t0 = time.perf_counter()
        model(tokens)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def prune_curve(model, calib: torch.Tensor, tokens: torch.Tensor, seed: int) -> dict[str, list[float]]:
    """Held-out loss with a fraction of every layer's neurons zeroed, by activation and at random."""
    names = [block_hook(i, "ffn.hook_post") for i in range(model.n_layers)]
    with capture(model, names, reduce=lambda _n, a: a.abs().float().sum((0, 1)), device="cpu") as cache:
        model(calib.to(module_device(model)))
    score = {n: torch.stack(cache.parts(n)).sum(0) for n in names}  # (F,) summed |activation|
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[float]] = {"by activation": [], "random": []}
    for frac in PRUNE:
        for how in out:
            if frac == 0:
                out[how].append(mean_loss(model, tokens, causal_lm_loss, 8))
                continue
            with contextlib.ExitStack() as stack:  # one `ablate` per layer, all active at once
                for n in names:
                    k = int(round(frac * score[n].numel()))
                    order = score[n].argsort() if how == "by activation" else torch.randperm(score[n].numel(),
                                                                                              generator=gen)
                    stack.enter_context(ablate(model, [n], "zero", neurons=order[:k]))
                out[how].append(mean_loss(model, tokens, causal_lm_loss, 8))
    return out


def pareto(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names whose (cost, loss) no other point beats in both (<= both, < one)."""
    return {a for a, (ca, la) in points.items()
            if not any((cb <= ca and lb <= la) and (cb < ca or lb < la) for b, (cb, lb) in points.items() if b != a)}


@experiment("efficiency-frontier", claim="C6", version=2, order=60,
            title="Loss vs parameters, FLOPs and latency: shrunk, shared, gated, MoE, low-rank, pruned FFNs")
def efficiency_frontier(ctx: Context) -> Result:
    task, s = data(ctx), size(ctx)
    cfgs = variants(base_model(ctx, task.vocab_size))
    thin = thin_frontier(ctx)
    if thin:
        cfgs = {k: c for k, c in cfgs.items() if k not in NOT_QUICK}
    losses: dict[str, list[float]] = {k: [] for k in cfgs}
    lat: dict[str, list[float]] = {k: [] for k in cfgs}
    prune: list[dict[str, list[float]]] = []
    jobs = [(seed, k) for seed in ctx.seeds for k in cfgs]
    with few_threads():
        for seed, k in progress_bar(jobs, ctx, "C6 frontier"):
            run = fit(ctx, cfgs[k], train_config(ctx, seed), task, f"c6 {k} s{seed}", in_verdict=k in IN_VERDICT)
            losses[k].append(run.test_loss)
            tokens = task.batch("test", 4000, 8, s.seq_len, seed)[0]
            lat[k].append(latency(run.model, tokens))
            if k == BASELINE:
                calib = task.batch("train", 10_000, 16, s.seq_len, seed)[0]
                held = task.batch("test", 4100, 16, s.seq_len, seed)[0]
                prune.append(prune_curve(run.model, calib, held, seed))
    mean = {k: estimate(k, v).mean for k, v in losses.items()}
    params = {k: count_params(c) for k, c in cfgs.items()}
    flops = {k: sum(flops_per_token(c, s.seq_len).values()) for k, c in cfgs.items()}
    front = pareto({k: (params[k], mean[k]) for k in cfgs})
    front_flops = pareto({k: (flops[k], mean[k]) for k in cfgs})
    delta = lambda k: [a - b for a, b in zip(losses[k], losses[BASELINE])]  # noqa: E731
    half = PRUNE.index(0.5)
    prune_delta = [p["by activation"][half] - p["by activation"][0] for p in prune]
    shared = estimate(CRITERION.quantity, delta("one shared FFN"), "nats")
    ratio1 = estimate("ratio 1 minus baseline", delta("ratio 1"), "nats")
    swiglu = estimate("swiglu minus baseline (matched params)", delta("swiglu (matched params)"), "nats")
    pruned = estimate("pruning 50% of neurons by activation: loss increase", prune_delta, "nats")
    wide = (estimate(f"{WIDE} minus baseline", delta(WIDE), "nats") if WIDE in losses else None)
    est = [shared, *([wide] if wide else []), ratio1, swiglu, pruned,
           estimate("pruning 50% of neurons at random: loss increase",
                    [p["random"][half] - p["random"][0] for p in prune], "nats")]
    verdict, reason = decide(CRITERION, shared, partial=(
        pruned.mean < 0.05 or ratio1.mean < 0.05,
        f"pruning half the neurons by activation costs {pruned.mean:.3f} nats and width ratio 1 costs "
        f"{ratio1.mean:.3f} nats (partial condition: either below 0.05)"))
    rows = [[k, params[k], flops[k] / 1e6, 1e3 * estimate(k, lat[k]).mean, mean[k],
             estimate(k, losses[k]).ci_high - mean[k], "yes" if k in front else "", "yes" if k in front_flops else ""]
            for k in cfgs]
    prune_rows = [[f, *[estimate("", [p[h][i] for p in prune]).mean for h in ("by activation", "random")]]
                  for i, f in enumerate(PRUNE)]
    return Result(
        name="", claim="", title="", version=0, mode=ctx.mode,
        method=f"{cfgs[BASELINE].n_layers}-layer decoders (d={cfgs[BASELINE].d_model}), one run per variant and "
               f"seed; test loss; FLOPs per "
               f"token at T={s.seq_len} from the accounting; latency = median forward of 8x{s.seq_len} tokens, "
               "fp32, one thread. Pruning zeroes the lowest-|activation| neurons (scored on a training batch) "
               "in every layer at once. " + training_method(ctx),
        criterion=CRITERION, verdict=verdict, reason=reason, estimates=est,
        tables=[Table("Variants", ["variant", "params", "MFLOP/token", "latency ms", "loss", "CI half-width",
                                   "Pareto (params)", "Pareto (FLOPs)"], rows),
                Table("Post-training pruning of the baseline", ["fraction pruned", "loss (by activation)",
                                                                "loss (random)"], prune_rows)],
        series=[Series("Held-out loss vs parameters", "parameters", "held-out loss (nats)",
                       [Line(k, [float(params[k])], [mean[k]]) for k in cfgs], kind="scatter", log_x=True,
                       note="Pareto frontier: " + ", ".join(sorted(front))),
                Series("Held-out loss vs FLOPs per token", "FLOPs per token", "held-out loss (nats)",
                       [Line(k, [flops[k]], [mean[k]]) for k in cfgs], kind="scatter", log_x=True),
                Series("Held-out loss vs latency", "latency (ms)", "held-out loss (nats)",
                       [Line(k, [1e3 * estimate(k, lat[k]).mean], [mean[k]]) for k in cfgs], kind="scatter"),
                Series("Pruning the baseline's neurons", "fraction pruned", "held-out loss (nats)",
                       [Line(h, list(PRUNE), [r[1 + i] for r in prune_rows]) for i, h in
                        enumerate(("by activation", "random"))])],
        anchors=[Anchor("Pires et al. 2023 (WMT22 En-De BLEU)",
                        "baseline 35.6; one shared encoder FFN + no decoder FFN 35.3 (60% params); "
                        "one wide shared FFN 36.5; no FFN 33.5",
                        f"one shared FFN {shared.mean:+.3f} nats, "
                        + (f"one wide shared FFN {wide.mean:+.3f} nats, " if wide else "") +
                        f"no FFN {estimate('', delta('ratio 0 (no FFN)')).mean:+.3f} nats vs baseline"),
                 Anchor("Shazeer 2020 (T5-base log-perplexity)", "SwiGLU 1.944 vs ReLU 1.997 at matched params",
                        f"SwiGLU minus GELU MLP: {swiglu.mean:+.3f} nats")],
        caveats=["Pruned neurons are zeroed, not removed: their latency is the dense model's.",
                 "Tiny models, short training: which variant wins can change with scale.",
                 "MoE latency includes the per-expert dispatch loop, which dominates at this size."]
                + ([f"Quick size: the frontier leaves out {', '.join(NOT_QUICK)} (run --full for all)."]
                   if thin else []),
        config={"models": {k: c.to_dict() for k, c in cfgs.items()}, "train": train_config(ctx, 0).to_dict(),
                "losses": losses, "latency": lat, "prune": prune},
    )
