"""C6: can the FFN be shrunk, shared or replaced? Held-out loss vs parameters, FLOPs, latency.

This module trains the variants and draws the frontier (descriptive: no verdict); the four
questions of the claim each get their own verdict in `c6_claims` (shrink, share, replace,
prune), from the same runs.

Trained on the same tokens and budget: width ratios 0, 1/2, 1, 2, 4, 8 (4 = baseline);
SwiGLU at the baseline's FFN parameters (Shazeer 2020); one FFN shared by every layer;
one wide shared FFN with the baseline's FFN parameters (Pires et al. 2023); MoE top-1 and
top-2 with the baseline's active FFN parameters; a low-rank FFN. After training, the
baseline's neurons are pruned 0..90% by mean |activation|, by weight norm and at random
(zeroed through `ffn.hook_post`). The Pareto frontier (no other point with fewer parameters and lower
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
from ffnlab.experiments.common import (base_model, data, fit_variants, size, size_name, train_config,
                                      training_method)
from ffnlab.experiments.registry import Context, Findings, experiment
from ffnlab.experiments.verdict import estimate
from ffnlab.model import ModelConfig, count_params, match_d_ff
from ffnlab.model.hooks import ablate, capture
from ffnlab.model.names import block_hook
from ffnlab.results import Anchor, Line, Series, Table

PRUNE = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
BASELINE = "ratio 4 (baseline)"
# left out of the quick size's frontier (the costliest to train; no quick verdict uses them)
WIDE = "one wide shared FFN (matched params)"
# what each size leaves out of the frontier to fit its budget (quick: 20 minutes for the whole study;
# full: 4 hours on 2 CPU cores, where these three were the context points no verdict reads)
LEFT_OUT = {"quick": ("ratio 0.5", "ratio 2", "ratio 8", WIDE, "moe top-1 (matched active)"),
            "full": ("ratio 0.5", "ratio 8", "moe top-1 (matched active)")}


def left_out(ctx: Context) -> tuple[str, ...]:
    """The variants the experiment's size leaves out of the frontier (and of the C6 questions)."""
    return LEFT_OUT.get(size_name(ctx), ())


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


PRUNE_WAYS = ("by activation", "by weight norm", "random")


@torch.no_grad()
def weight_score(ffn) -> torch.Tensor:
    """Per neuron, ||w_in|| ||w_out||: how large its read and write weights are (F,)."""
    return ffn.fc_in.weight.float().norm(dim=1) * ffn.values().float().norm(dim=1)


@torch.no_grad()
def prune_curve(model, calib: torch.Tensor, tokens: torch.Tensor, seed: int) -> dict[str, list[float]]:
    """Held-out loss with a fraction of every layer's neurons zeroed: the lowest by mean |activation|
    on `calib`, the lowest by weight norm, and at random (`PRUNE_WAYS`)."""
    names = [block_hook(i, "ffn.hook_post") for i in range(model.n_layers)]
    with capture(model, names, reduce=lambda _n, a: a.abs().float().sum((0, 1)), device="cpu") as cache:
        model(calib.to(module_device(model)))
    gen = torch.Generator().manual_seed(seed)
    weights = {n: weight_score(block.ffn).cpu() for n, block in zip(names, model.blocks)}
    order = {"by activation": {n: torch.stack(cache.parts(n)).sum(0).argsort() for n in names},
             "by weight norm": {n: w.argsort() for n, w in weights.items()},
             "random": {n: torch.randperm(len(w), generator=gen) for n, w in weights.items()}}
    dense = mean_loss(model, tokens, causal_lm_loss, 8)
    out: dict[str, list[float]] = {how: [] for how in PRUNE_WAYS}
    for frac in PRUNE:
        for how in PRUNE_WAYS:
            if frac == 0:
                out[how].append(dense)
                continue
            with contextlib.ExitStack() as stack:  # one `ablate` per layer, all active at once
                for n in names:
                    k = int(round(frac * len(order[how][n])))
                    stack.enter_context(ablate(model, [n], "zero", neurons=order[how][n][:k]))
                out[how].append(mean_loss(model, tokens, causal_lm_loss, 8))
    return out


def pareto(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names whose (cost, loss) no other point beats in both (<= both, < one)."""
    return {a for a, (ca, la) in points.items()
            if not any((cb <= ca and lb <= la) and (cb < ca or lb < la) for b, (cb, lb) in points.items() if b != a)}


@experiment("efficiency-frontier", claim="C6", version=3, order=60,
            title="Loss vs parameters, FLOPs and latency: shrunk, shared, gated, MoE and low-rank FFNs")
def efficiency_frontier(ctx: Context) -> Findings:
    """Descriptive: every variant on the three cost axes, Pareto fronts marked (verdicts: `c6_claims`)."""
    task, s = data(ctx), size(ctx)
    cfgs = variants(base_model(ctx, task.vocab_size))
    thin = left_out(ctx)
    cfgs = {k: c for k, c in cfgs.items() if k not in thin}
    lat: dict[str, list[float]] = {k: [] for k in cfgs}

    def timed(seed: int, name: str, run) -> None:
        lat[name].append(latency(run.model, task.batch("test", 4000, 8, s.seq_len, seed)[0]))

    losses = fit_variants(ctx, task, cfgs, "c6", in_verdict=lambda k: False, each=timed)
    est = {k: estimate(k, v, "nats") for k, v in losses.items()}
    mean = {k: e.mean for k, e in est.items()}
    params = {k: count_params(c) for k, c in cfgs.items()}
    flops = {k: sum(flops_per_token(c, s.seq_len).values()) for k, c in cfgs.items()}
    front = pareto({k: (params[k], mean[k]) for k in cfgs})
    front_flops = pareto({k: (flops[k], mean[k]) for k in cfgs})
    front_lat = pareto({k: (estimate(k, lat[k]).mean, mean[k]) for k in cfgs})
    delta = lambda k: [a - b for a, b in zip(losses[k], losses[BASELINE])]  # noqa: E731
    rows = [[k, params[k], flops[k] / 1e6, 1e3 * estimate(k, lat[k]).mean, mean[k], est[k].ci_low, est[k].ci_high,
             " ".join(axis for axis, f in (("params", front), ("FLOPs", front_flops), ("latency", front_lat))
                      if k in f)]
            for k in cfgs]
    errs = {k: est[k].ci_high - mean[k] for k in cfgs}

    def scatter(title: str, x_label: str, x: dict[str, float], front_of: set[str], log_x: bool = True) -> Series:
        return Series(title, x_label, "held-out loss (nats)", [Line(k, [x[k]], [mean[k]], [errs[k]]) for k in cfgs],
                      kind="scatter", log_x=log_x, note="Pareto front: " + ", ".join(sorted(front_of)))

    return Findings(
        method=f"{cfgs[BASELINE].n_layers}-layer decoders (d={cfgs[BASELINE].d_model}), one run per variant and "
               f"seed; test loss with its 95% interval over seeds; FLOPs per token at T={s.seq_len} from the "
               f"accounting; latency = median forward of 8x{s.seq_len} tokens, fp32, on the study's threads. "
               "A point is on a Pareto front when no other has both a lower cost and a lower loss. The verdicts "
               "on shrinking, sharing, replacing and pruning are separate results of this claim. "
               + training_method(ctx),
        estimates=[estimate(f"{k} minus baseline", delta(k), "nats") for k in cfgs if k != BASELINE],
        tables=[Table("Variants", ["variant", "params", "MFLOP/token", "latency ms", "loss", "95% CI low",
                                   "95% CI high", "on the Pareto front of"], rows)],
        series=[scatter("Held-out loss vs parameters", "parameters", {k: float(v) for k, v in params.items()}, front),
                scatter("Held-out loss vs FLOPs per token", "FLOPs per token", flops, front_flops),
                scatter("Held-out loss vs latency", "latency (ms)",
                        {k: 1e3 * estimate(k, lat[k]).mean for k in cfgs}, front_lat, log_x=False)],
        anchors=[Anchor("Shazeer 2020 (T5-base log-perplexity)", "SwiGLU 1.944 vs ReLU 1.997 at matched params",
                        f"SwiGLU minus GELU MLP: {estimate('', delta('swiglu (matched params)')).mean:+.3f} nats "
                        "(character-level nats, not T5 log-perplexity: compare signs)")],
        caveats=["Tiny models, short training: which variant wins can change with scale.",
                 "MoE latency includes the per-expert dispatch loop, which dominates at this size."]
                + ([f"The {size_name(ctx)} size leaves out {', '.join(thin)} to fit its time budget."]
                   if thin else []),
        config={"models": {k: c.to_dict() for k, c in cfgs.items()}, "train": train_config(ctx, 0).to_dict(),
                "losses": losses, "latency": lat},
    )
