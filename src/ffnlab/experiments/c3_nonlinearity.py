"""C3: is the FFN's point the element-wise nonlinearity that attention lacks?

Train, on the same tokens and budget, a full FFN (4x GELU MLP), the same FFN with its
activation removed (`linear`: two projections, a rank-limited linear map), and no FFN,
at matched depth; and no-FFN models with the full model's parameter count, once deeper
(`match_depth`) and once wider (`match_width`). If the nonlinearity is the point, the
linear FFN loses most of the FFN's benefit and is no better than spending its
parameters on more attention.
"""

from __future__ import annotations

from ffnlab.experiments.common import (base_model, data, few_threads, fit, progress_bar, size, train_ahead,
                                      train_config, training_method)
from ffnlab.experiments.registry import Context, experiment
from ffnlab.experiments.verdict import decide, estimate
from ffnlab.model import count_params, match_depth, match_width
from ffnlab.results import Anchor, Criterion, Line, Result, Series, Table

CRITERION = Criterion("held-out loss of the linear FFN minus that of the GELU FFN (matched depth)", ">", 0.02,
                      "95% t-interval over seeds above 0.02 nats; for 'supported' the linear FFN must also "
                      "be no better than no FFN at matched parameters (by more than 0.02 nats)")
TOLERANCE = 0.02  # nats: differences below this are treated as no difference
REFERENCE = "no FFN (same depth)"  # shown for reference; the criterion compares at matched parameters


def variants(ctx: Context, vocab_size: int) -> dict[str, object]:
    full = base_model(ctx, vocab_size)
    none = full.with_ffn(kind="none")
    target = count_params(full)
    return {
        "gelu FFN": full,
        "linear FFN": full.with_ffn(kind="linear"),
        "no FFN (same depth)": none,
        "no FFN (matched params, deeper)": match_depth(none, target),
        "no FFN (matched params, wider)": match_width(none, target),
    }


@experiment("nonlinearity", claim="C3", version=2, order=30,
            title="Full FFN vs the same FFN without activation vs no FFN, matched parameters and depth")
def nonlinearity(ctx: Context) -> Result:
    task = data(ctx)
    cfgs = variants(ctx, task.vocab_size)
    losses: dict[str, list[float]] = {name: [] for name in cfgs}
    jobs = [(seed, name) for seed in ctx.seeds for name in cfgs]
    train_ahead(ctx, task, [(cfgs[n], train_config(ctx, seed), f"c3 {n} s{seed}") for seed, n in jobs])
    with few_threads():
        for seed, name in progress_bar(jobs, ctx, "C3 nonlinearity"):
            run = fit(ctx, cfgs[name], train_config(ctx, seed), task, f"c3 {name} s{seed}",
                      in_verdict=name != REFERENCE)
            losses[name].append(run.test_loss)
    gap = [lin - full for lin, full in zip(losses["linear FFN"], losses["gelu FFN"])]
    matched = ["no FFN (matched params, deeper)", "no FFN (matched params, wider)"]
    best_none = [min(losses[m][i] for m in matched) for i in range(len(ctx.seeds))]
    lin_vs_none = [lin - none for lin, none in zip(losses["linear FFN"], best_none)]
    ffn_gain = [none - full for none, full in zip(best_none, losses["gelu FFN"])]
    est = [estimate(CRITERION.quantity, gap, "nats"),
           estimate("linear FFN minus best no-FFN model at matched params", lin_vs_none, "nats"),
           estimate("best no-FFN model at matched params minus GELU FFN", ffn_gain, "nats")]
    verdict, reason = decide(CRITERION, est[0], requirements=[
        (est[1].mean > -TOLERANCE, f"the linear FFN is no better than no FFN at matched parameters "
                                   f"(difference {est[1].mean:+.3f} nats, tolerance {TOLERANCE})")])
    rows = [[name, cfgs[name].n_layers, cfgs[name].d_model, count_params(cfgs[name]),
             estimate(name, v).mean, estimate(name, v).ci_low, estimate(name, v).ci_high]
            for name, v in losses.items()]
    s = size(ctx)
    return Result(
        name="", claim="", title="", version=0, mode=ctx.mode,
        method=f"Decoders trained on the same corpus ({s.tokenizer} tokens, vocab {task.vocab_size}), one run per "
               f"variant and seed; test next-token loss. 'linear' keeps both FFN projections and drops the GELU. "
               + training_method(ctx),
        criterion=CRITERION, verdict=verdict, reason=reason, estimates=est,
        tables=[Table("Held-out loss per variant", ["variant", "layers", "d_model", "params", "loss (nats)",
                                                    "95% CI low", "95% CI high"], rows)],
        series=[Series("Held-out loss per variant", "parameters", "held-out loss (nats)",
                       [Line(name, [float(count_params(cfgs[name]))], [estimate(name, v).mean],
                             [estimate(name, v).ci_high - estimate(name, v).mean]) for name, v in losses.items()],
                       kind="scatter")],
        anchors=[Anchor("Shazeer 2020 (T5-base log-perplexity, 65k steps)",
                        "ReLU 1.997, GELU 1.983, Bilinear (gated, no activation) 1.960",
                        f"linear minus GELU FFN: {est[0].mean:+.3f} nats (an ungated linear FFN is a "
                        "rank-limited linear map, unlike the gated Bilinear, which stays quadratic)")],
        caveats=["Tiny models and short training: the size of each gap depends on scale; the sign is what is "
                 "compared.",
                 "A linear FFN adds a linear map of rank <= d_model to the stream; LayerNorm and softmax "
                 "keep the network nonlinear even without any FFN."],
        config={"models": {name: cfg.to_dict() for name, cfg in cfgs.items()},
                "train": train_config(ctx, 0).to_dict(), "losses": losses},
    )
