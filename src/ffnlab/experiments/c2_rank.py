"""C2: without the FFN, does stacked self-attention lose token diversity (rank collapse)?

Dong, Cordonnier, Loukas 2021's residual ratio ||res(H_l)|| / ||H_l|| after every block of a
deep decoder, for the four surgeries of `ffnlab.analysis.rank` (full block; FFN removed,
attention keeps its skip; skip around attention removed, FFN kept; pure attention), at
initialisation and after training; and, built by config and trained as such, models
without FFN, without the skip around attention, and with neither.
"""

from __future__ import annotations

import torch

from ffnlab.analysis.rank import VARIANTS, rank_collapse
from ffnlab.experiments.common import (base_model, data, few_threads, fit, progress_bar, size, size_name, train_ahead,
                                      train_config, training_method)
from ffnlab.experiments.registry import Context, experiment
from ffnlab.experiments.verdict import decide, estimate
from ffnlab.model import ModelConfig, Transformer
from ffnlab.results import Anchor, Criterion, Line, Result, Series, Table

CRITERION = Criterion("last-layer residual ratio of a model built and trained without FFN / full model", "<", 0.5,
                      "95% t-interval over seeds below 0.5 (without the FFN the rank collapses); for "
                      "'supported' removing the FFN from the trained full model by surgery must agree "
                      "(ratio < 0.5); partly if only pure attention (no skip, no FFN) collapses below 0.1")
MEASURE = {"test": (4, 32), "quick": (32, 128), "full": (32, 128)}  # sequences, tokens (Dong et al.: 32 x 128)


def deep_model(ctx: Context, vocab_size: int, **changes) -> ModelConfig:
    """The base model at the size's C2 depth and width (in quick the base model itself, so C2's
    models with skips are the runs C3 and C6 train too)."""
    s = size(ctx)
    return base_model(ctx, vocab_size, d_model=s.deep_width, n_layers=s.deep_layers, **changes)


def built_variants(ctx: Context, vocab_size: int) -> dict[str, ModelConfig]:
    """The four block types built by config (and trained as such)."""
    full = deep_model(ctx, vocab_size)
    return {
        "full": full,
        "attn+skip": full.with_ffn(kind="none"),
        "attn+ffn": full.replace(attn_skip=False),
        "attn-only": full.replace(attn_skip=False).with_ffn(kind="none"),
    }


CONTROL = ("a control built without the skip around attention, which Dong et al. show collapses; it is not "
           "meant to be a good language model")


@experiment("rank-collapse", claim="C2", version=2, order=20,
            title="Rank collapse per layer: pure attention, attention+FFN, attention+skip, full block")
def rank_collapse_experiment(ctx: Context) -> Result:
    task = data(ctx)
    n_seq, length = MEASURE.get(size_name(ctx), (32, 128))
    cfgs = built_variants(ctx, task.vocab_size)
    surg = {("init", v): [] for v in VARIANTS} | {("trained", v): [] for v in VARIANTS}
    built = {v: [] for v in cfgs}
    jobs = [(seed, v) for seed in ctx.seeds for v in cfgs]
    train_ahead(ctx, task, [(cfgs[v], train_config(ctx, seed), f"c2 {v} s{seed}") for seed, v in jobs])
    with few_threads():
        for seed, variant in progress_bar(jobs, ctx, "C2 rank collapse"):
            tokens = task.batch("test", 5000, n_seq, length, seed)[0]
            exempt = CONTROL if variant in ("attn+ffn", "attn-only") else ""
            run = fit(ctx, cfgs[variant], train_config(ctx, seed), task, f"c2 {variant} s{seed}", exempt=exempt)
            built[variant].append(rank_collapse(run.model, tokens, "full").mean)
            if variant == "full":
                torch.manual_seed(seed)
                init = Transformer(cfgs["full"]).eval()
                for v in VARIANTS:
                    surg[("init", v)].append(rank_collapse(init, tokens, v).mean)
                    surg[("trained", v)].append(rank_collapse(run.model, tokens, v).mean)
    last = lambda profiles: [p[-1] for p in profiles]  # noqa: E731
    rel = lambda a, b: [x / y for x, y in zip(last(a), last(b))]  # noqa: E731
    est = [estimate(CRITERION.quantity, rel(built["attn+skip"], built["full"])),
           estimate("last-layer ratio, FFN removed by surgery (skip kept) / full model, trained",
                    rel(surg[("trained", "attn+skip")], surg[("trained", "full")])),
           estimate("last-layer ratio, model built and trained as pure attention / full model",
                    rel(built["attn-only"], built["full"])),
           estimate("last-layer ratio, pure attention / full model, trained (surgery)",
                    rel(surg[("trained", "attn-only")], surg[("trained", "full")])),
           estimate("last-layer ratio, skip removed but FFN kept / full model, trained (surgery)",
                    rel(surg[("trained", "attn+ffn")], surg[("trained", "full")]))]
    verdict, reason = decide(
        CRITERION, est[0],
        requirements=[(est[1].mean < CRITERION.threshold,
                       f"removing the FFN by surgery agrees (ratio {est[1].mean:.3g} < 0.5)")],
        partial=(est[2].mean < 0.1, f"pure attention collapses (ratio {est[2].mean:.3g} of the full model)"))
    n_layers = cfgs["full"].n_layers
    xs = [float(i + 1) for i in range(n_layers)]

    def mean_line(label: str, profiles: list[list[float]]) -> Line:
        per_layer = [estimate("", [p[i] for p in profiles]) for i in range(n_layers)]
        return Line(label, xs, [e.mean for e in per_layer], [e.ci_high - e.mean for e in per_layer])

    series = [Series(f"Residual ratio per layer ({stage}, by hook surgery)", "layer", "||res(H)|| / ||H||",
                     [mean_line(v, surg[(stage, v)]) for v in VARIANTS], log_y=True)
              for stage in ("init", "trained")]
    series.append(Series("Residual ratio per layer (models built and trained without parts)", "layer",
                         "||res(H)|| / ||H||", [mean_line(v, built[v]) for v in cfgs], log_y=True))
    rows = [[stage, v, *[round(x, 5) for x in mean_line(v, surg[(stage, v)]).y]]
            for stage in ("init", "trained") for v in VARIANTS]
    rows += [["built+trained", v, *[round(x, 5) for x in mean_line(v, built[v]).y]] for v in cfgs]
    return Result(
        name="", claim="", title="", version=0, mode=ctx.mode,
        method=f"{n_layers}-layer pre-LN decoders (d={cfgs['full'].d_model}); ratio "
               f"measured on hook_resid_post of every block over {n_seq} test sequences of {length} tokens, "
               "norm sqrt(||.||_1 ||.||_inf), res(H) = H - 1 mean_row(H)^T. " + training_method(ctx),
        criterion=CRITERION, verdict=verdict, reason=reason, estimates=est,
        tables=[Table("Mean residual ratio per layer", ["stage", "variant", *[f"L{i + 1}" for i in range(n_layers)]],
                      rows)],
        series=series,
        anchors=[Anchor("Dong, Cordonnier, Loukas 2021",
                        "pure attention collapses within a few layers; skip connections prevent it; the MLP "
                        "only slows it",
                        f"trained, last layer vs full (surgery): pure attention {est[3].mean:.3g}, attention+FFN "
                        f"without skip {est[4].mean:.3g}, attention+skip without FFN {est[1].mean:.3g}; built "
                        f"without FFN {est[0].mean:.3g}")],
        caveats=["Surgery removes parts of a model trained with them; the built-and-trained variants show what a "
                 "model trained without them does.",
                 "Pre-LN blocks: the norm before attention rescales each token, which changes the rate of "
                 "collapse compared with Dong et al.'s norm-free analysis."],
        config={"models": {v: c.to_dict() for v, c in cfgs.items()}, "train": train_config(ctx, 0).to_dict(),
                "sequences": n_seq, "tokens": length},
    )
