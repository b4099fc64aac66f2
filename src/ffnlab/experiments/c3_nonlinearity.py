"""C3: is the FFN's point the element-wise nonlinearity that attention lacks?

Train, on the same tokens and budget, a full FFN (4x GELU MLP), the same FFN with its
activation removed (`linear`: two projections, together one affine map of rank <= d_model),
and no FFN, at matched depth; no-FFN models with the full model's parameter count, once
deeper (`match_depth`) and once wider (`match_width`); and gated FFNs at matched parameters
(gated width about 2/3, Shazeer 2020): SwiGLU, and outside the quick size Bilinear, which is
gated but has no element-wise nonlinearity at all (ReGLU too, outside quick and full).

The criterion is the share of the FFN's gain the linear FFN keeps,
(L_none - L_linear) / (L_none - L_gelu), no FFN at the same depth, paired by seed: if the
nonlinearity is the point, the linear FFN keeps little of it.
"""

from __future__ import annotations

import torch

from ffnlab.experiments.common import (base_model, data, fit_variants, size, size_name, train_config,
                                      training_method)
from ffnlab.experiments.quality import comparison_deviation
from ffnlab.experiments.registry import Context, Findings, experiment
from ffnlab.experiments.verdict import decide, estimate
from ffnlab.model import count_params, match_d_ff, match_depth, match_width
from ffnlab.results import Anchor, Criterion, Deviation, Estimate, Line, Series, Table

CRITERION = Criterion("share of the FFN's gain the linear FFN keeps, (L_none - L_linear) / (L_none - L_gelu), "
                      "no FFN at the same depth", "<", 0.5,
                      "95% t-interval over paired seeds below 0.5 (without its activation the FFN loses most "
                      "of what it adds); for 'supported' the linear FFN must also be worse than GELU by more "
                      "than 0.02 nats; partly if it is (interval above 0) while keeping most of the gain")
TOLERANCE = 0.02  # nats: differences below this are treated as no difference
GELU, LINEAR, NONE = "gelu FFN", "linear FFN", "no FFN (same depth)"
MATCHED = ("no FFN (matched params, deeper)", "no FFN (matched params, wider)")
# gated variants a size leaves out: quick's 20 minutes, and full's 4 hours (ReGLU: SwiGLU and Bilinear cover
# "gated with" and "gated without an element-wise activation")
LEFT_OUT = {"quick": ("bilinear (matched params)", "reglu (matched params)"), "full": ("reglu (matched params)",)}


def variants(ctx: Context, vocab_size: int) -> dict[str, object]:
    full = base_model(ctx, vocab_size)
    none = full.with_ffn(kind="none")
    target, d = count_params(full), full.d_model
    out = {GELU: full, LINEAR: full.with_ffn(kind="linear"), NONE: none,
           MATCHED[0]: match_depth(none, target), MATCHED[1]: match_width(none, target)}
    for kind in ("swiglu", "reglu", "bilinear"):
        out[f"{kind} (matched params)"] = full.replace(ffn=match_d_ff(full.ffn, kind, d))  # C6 trains swiglu too
    return {k: v for k, v in out.items() if k not in LEFT_OUT.get(size_name(ctx), ())}


def kept_share(none: list[float], linear: list[float], gelu: list[float]) -> list[float]:
    """Per seed, (L_none - L_linear) / (L_none - L_gelu); seeds where the FFN gains nothing are left out."""
    return [(n - lin) / (n - g) for n, lin, g in zip(none, linear, gelu) if n - g > 1e-9]


def c3_verdict(share: Estimate, linear_minus_gelu: Estimate) -> tuple[str, str]:
    hurts = (linear_minus_gelu.mean > TOLERANCE and linear_minus_gelu.ci_low > 0,
             f"dropping the activation costs {linear_minus_gelu.mean:+.3f} nats (needs > {TOLERANCE} with its "
             "interval above 0)")
    return decide(CRITERION, share, requirements=[hurts], partial=hurts)


@torch.no_grad()
def linear_ffn_rank(model, tol: float = 1e-3) -> list[int]:
    """Numerical rank of each linear FFN's map W_out W_in (singular values above `tol` x the largest)."""
    ranks = []
    for block in model.blocks:
        m = block.ffn.fc_out.weight @ block.ffn.fc_in.weight  # (D, D)
        s = torch.linalg.svdvals(m.double())
        ranks.append(int((s > tol * s[0]).sum()))
    return ranks


@experiment("nonlinearity", claim="C3", version=5, order=30,
            title="How much of the FFN's gain survives without its activation; gated FFNs beside it",
            deviations=(Deviation(3, "criterion changed from 'linear minus GELU FFN > 0.02 nats' to 'share of the "
                                     "FFN's gain the linear FFN keeps < 0.5'",
                                  "version 2's quick results (the linear FFN kept (5.389 - 5.044) / (5.389 - "
                                  "5.002) = 89% of the gain while costing 0.042 nats)",
                                  "a difference in nats hid how much of the FFN's gain survives without its "
                                  "activation, which is what the claim is about"),
                        comparison_deviation(4, "version 3's quick results (GELU 0.29 nats below the best n-gram; "
                                                "linear FFN 0.10 and no FFN 0.04 below it, short of the 0.2 bar)"),
                        Deviation(5, "a comparison model the criterion uses that misses the plateau is trained once "
                                     "more at 1.5x its steps and the longer run replaces it (quality.RETRY_RULE, in "
                                     "this experiment only); ReGLU left out of the full size",
                                  "version 4's full results: inconclusive only because the linear FFN (seed 2) and "
                                  "the wider no-FFN model (seed 2) still fell 1.05% and 1.4% over their last 20% "
                                  "of steps (plateau: < 1%), while every other model met its bar",
                                  "the plateau rule separates 'weaker' from 'under-trained'; a longer run of the "
                                  "variant that is still falling can decide which it is, at a fraction of the whole "
                                  "study training longer. Its direction: a retried linear FFN keeps more of the gain "
                                  "(harder to support), a retried same-depth no-FFN model leaves less gain to keep "
                                  "(easier), a retried matched-params no-FFN model moves only the estimates beside "
                                  "the criterion; ReGLU: the full study's 4-hour budget")))
def nonlinearity(ctx: Context) -> Findings:
    task = data(ctx)
    cfgs = variants(ctx, task.vocab_size)
    ranks: list[list[int]] = []

    def rank_of_linear(seed: int, name: str, run) -> None:
        if name == LINEAR:
            ranks.append(linear_ffn_rank(run.model))

    losses = fit_variants(ctx, task, cfgs, "c3", in_verdict=lambda name: name in (GELU, LINEAR, NONE, *MATCHED),
                          each=rank_of_linear, reference=lambda name: name == GELU, retry=True)
    diff = lambda a, b: [x - y for x, y in zip(losses[a], losses[b])]  # noqa: E731
    best_none = [min(losses[m][i] for m in MATCHED) for i in range(len(ctx.seeds))]
    share = kept_share(losses[NONE], losses[LINEAR], losses[GELU])
    est = [estimate(CRITERION.quantity, share or [float("nan")]),
           estimate("linear FFN minus GELU FFN", diff(LINEAR, GELU), "nats"),
           estimate("linear FFN minus the best no-FFN model at matched params",
                    [lin - n for lin, n in zip(losses[LINEAR], best_none)], "nats"),
           estimate("best no-FFN model at matched params minus GELU FFN",
                    [n - g for n, g in zip(best_none, losses[GELU])], "nats"),
           *[estimate(f"{name.split()[0]} minus GELU FFN (matched params)", diff(name, GELU), "nats")
             for name in cfgs if "(matched params)" in name and name not in MATCHED]]
    if not share:
        verdict, reason = "not supported", "the GELU FFN gains nothing over no FFN here, so there is no gain to keep"
    else:
        verdict, reason = c3_verdict(est[0], est[1])
    d = cfgs[GELU].d_model
    ffn_params = (count_params(cfgs[LINEAR]) - count_params(cfgs[NONE])) // cfgs[LINEAR].n_layers
    rank_text = (f"measured rank of W_out W_in per layer (singular values > 1e-3 of the largest): "
                 f"{', '.join('/'.join(map(str, r)) for r in zip(*ranks))}" if ranks else "")
    rows = [[name, cfgs[name].n_layers, cfgs[name].d_model, count_params(cfgs[name]),
             estimate(name, v).mean, estimate(name, v).ci_low, estimate(name, v).ci_high]
            for name, v in losses.items()]
    s = size(ctx)
    left_out = LEFT_OUT.get(size_name(ctx), ())
    return Findings(
        method=f"Decoders trained on the same corpus ({s.tokenizer} tokens, vocab {task.vocab_size}), one run per "
               f"variant and seed; test next-token loss. 'linear' keeps both FFN projections and drops the GELU: "
               f"{ffn_params:,} stored parameters per layer that compose to one affine map of rank <= {d} "
               f"({d * d + d:,} effective parameters). Gated FFNs at matched parameters: "
               f"{', '.join(k for k in cfgs if '(matched params)' in k and k not in MATCHED)}"
               + (f" ({', '.join(left_out)} left out of the {size_name(ctx)} size)" if left_out else "") + ". "
               + training_method(ctx, retry=True),
        criterion=CRITERION, verdict=verdict, reason=reason, estimates=est,
        tables=[Table("Held-out loss per variant", ["variant", "layers", "d_model", "params", "loss (nats)",
                                                    "95% CI low", "95% CI high"], rows, note=rank_text)],
        series=[Series("Held-out loss per variant", "parameters", "held-out loss (nats)",
                       [Line(name, [float(count_params(cfgs[name]))], [estimate(name, v).mean],
                             [estimate(name, v).ci_high - estimate(name, v).mean]) for name, v in losses.items()],
                       kind="scatter")],
        anchors=[Anchor("Shazeer 2020 (T5-base log-perplexity, 65k steps)",
                        "ReLU 1.997, GELU 1.983, Bilinear (gated, no activation) 1.960, SwiGLU 1.944",
                        f"linear minus GELU FFN: {est[1].mean:+.3f} nats; gated minus GELU: "
                        + "; ".join(f"{e.quantity.split()[0]} {e.mean:+.3f}" for e in est[4:])
                        + " (losses in nats on character-level text, not T5's log-perplexity: compare signs)")],
        caveats=["Tiny models and short training: the size of each gap depends on scale; the sign is what is "
                 "compared.",
                 "A linear FFN adds one affine map of rank <= d_model to the stream; LayerNorm and softmax "
                 "keep the network nonlinear even without any FFN. Bilinear is gated: the product of two "
                 "projections is quadratic in its input, a nonlinearity without an element-wise activation."],
        config={"models": {name: cfg.to_dict() for name, cfg in cfgs.items()},
                "train": train_config(ctx, 0).to_dict(), "losses": losses, "linear_ffn_rank": ranks},
    )
