"""C8: are facts stored in the FFNs while attention does in-context computation?

Models with and without FFN, at matched parameter count (the no-FFN model is wider,
`match_width`), are trained on one mixture of two synthetic tasks (`tasks.py`): facts
entity -> attribute seen few or many times, and associative recall of key -> value
pairs given in the prompt. Accuracy per task, and for facts per exposure count.
"""

from __future__ import annotations

from ffnlab.experiments.common import base_model, few_threads, fit, progress_bar, size, train_config
from ffnlab.experiments.registry import Context, experiment
from ffnlab.experiments.tasks import FactTask, Mixture, RecallTask, answer_accuracy, fact_accuracy
from ffnlab.experiments.verdict import decide, estimate
from ffnlab.model import count_params, match_width
from ffnlab.results import Anchor, Criterion, Line, Result, Series, Table

CRITERION = Criterion("accuracy on the most-seen facts, with FFN minus without FFN (matched params)", ">", 0.1,
                      "95% t-interval over seeds above 0.1; for 'supported' the model without FFN must also "
                      "recall in context about as well (within 0.1 of the model with FFN, and above 3x chance)")
TASKS = {"test": (40, 8), "quick": (120, 16), "full": (400, 32)}  # entities, attributes
WEIGHTS = (1, 8, 64)


def make_task(ctx: Context) -> tuple[FactTask, RecallTask, Mixture]:
    n_ent, n_attr = TASKS.get(ctx.options.get("size", ctx.mode), TASKS["quick"])
    facts = FactTask(n_ent, n_attr, WEIGHTS, seed=0)
    recall = RecallTask(n_keys=32, n_values=32, n_pairs=6, n_queries=4, offset=facts.vocab_size - 3)
    return facts, recall, Mixture(facts, recall)


@experiment("memorisation", claim="C8", version=1, order=80,
            title="Facts seen few vs many times vs in-context recall, with and without FFN")
def memorisation(ctx: Context) -> Result:
    s = size(ctx)
    facts, recall, mix = make_task(ctx)
    with_ffn = base_model(ctx, mix.vocab_size)
    without = match_width(with_ffn.with_ffn(kind="none"), count_params(with_ffn))
    cfgs = {"with FFN": with_ffn, "without FFN (matched params)": without}
    acc: dict[str, dict[str, list[float]]] = {k: {} for k in cfgs}
    jobs = [(seed, k) for seed in ctx.seeds for k in cfgs]
    with few_threads():
        for seed, k in progress_bar(jobs, ctx, "C8 memorisation"):
            run = fit(ctx, cfgs[k], train_config(ctx, seed), mix, f"c8 {k} s{seed}")
            per_weight = fact_accuracy(run.model, facts)
            for w, a in per_weight.items():
                acc[k].setdefault(f"facts x{w}", []).append(a)
            x, y = recall.batch("val", 0, 256, s.seq_len, seed)
            acc[k].setdefault("in-context recall", []).append(answer_accuracy(run.model, x, y))
    top = f"facts x{max(WEIGHTS)}"
    diff = lambda key: [a - b for a, b in zip(acc["with FFN"][key], acc["without FFN (matched params)"][key])]  # noqa: E731
    est = [estimate(CRITERION.quantity, diff(top)),
           estimate("in-context recall accuracy, without FFN minus with FFN",
                    [-d for d in diff("in-context recall")]),
           estimate("accuracy on the least-seen facts, with FFN minus without FFN", diff(f"facts x{min(WEIGHTS)}"))]
    no_ffn_recall = estimate("", acc["without FFN (matched params)"]["in-context recall"]).mean
    verdict, reason = decide(CRITERION, est[0], requirements=[
        (est[1].mean > -0.1, f"the model without FFN recalls in context within 0.1 of the one with FFN "
                             f"({est[1].mean:+.3f})"),
        (no_ffn_recall > 3.0 / recall.n_values, f"the model without FFN learned in-context recall "
                                                f"(accuracy {no_ffn_recall:.3f} > 3x chance)")])
    caveats = []
    best_recall = max(estimate("", acc[k]["in-context recall"]).mean for k in cfgs)
    if best_recall < 3.0 / recall.n_values:  # within 3x of chance: neither model learned the task
        caveats.append(f"In-context recall stayed near chance (best {best_recall:.3f}, chance "
                       f"{1 / recall.n_values:.3f}): in this budget neither model learned it, so the recall "
                       "comparison says nothing about where in-context computation happens.")
    statements = s.steps * (s.batch_size // 2) * ((s.seq_len + 1) // 4)  # half the rows are fact rows
    exposures = facts.exposures(statements)
    keys = [*[f"facts x{w}" for w in WEIGHTS], "in-context recall"]
    rows = [[k, count_params(cfgs[k]), cfgs[k].d_model,
             *[estimate("", acc[k][key]).mean for key in keys]] for k in cfgs]
    return Result(
        name="", claim="", title="", version=0, mode=ctx.mode,
        method=f"{with_ffn.n_layers}-layer decoders trained {s.steps} steps on a 50/50 mixture of fact statements "
               f"({facts.n_entities} entities, {facts.n_attributes} attributes, exposure weights {WEIGHTS}) and "
               f"in-context recall ({recall.n_pairs} fresh pairs, {recall.n_queries} queries per sequence); "
               "facts asked at sequence start, recall on 256 fresh sequences. The no-FFN model is wider to match "
               "parameters.",
        criterion=CRITERION, verdict=verdict, reason=reason, estimates=est,
        tables=[Table("Accuracy per task", ["model", "params", "d_model", *keys], rows,
                      note="expected times each fact was seen in training: " +
                           ", ".join(f"weight {w}: {n:.0f}" for w, n in exposures.items()) +
                           f"; chance: facts 1/{facts.n_attributes}, recall 1/{recall.n_values}")],
        series=[Series("Fact accuracy vs exposures", "expected exposures in training", "accuracy",
                       [Line(k, [exposures[w] for w in WEIGHTS],
                             [estimate("", acc[k][f"facts x{w}"]).mean for w in WEIGHTS]) for k in cfgs],
                       log_x=True),
                Series("In-context recall accuracy", "model", "accuracy",
                       [Line(k, [float(i)], [estimate("", acc[k]["in-context recall"]).mean])
                        for i, k in enumerate(cfgs)], kind="bar")],
        anchors=[Anchor("Meng et al. 2022 (ROME, GPT-2 XL causal tracing)",
                        "MLP indirect effect at the last subject token 6.6% vs attention 1.6%",
                        f"most-seen facts: FFN model minus no-FFN model {est[0].mean:+.3f} accuracy; in-context "
                        f"recall: no-FFN minus FFN {est[1].mean:+.3f}")],
        caveats=[*caveats, "Synthetic tasks on tiny models: the point is the contrast between the two models, not the "
                 "absolute accuracy.",
                 "Attention layers also have parameters that can store facts; matching parameters makes the "
                 "no-FFN model wider, which also helps it store facts in attention and embeddings."],
        config={"models": {k: c.to_dict() for k, c in cfgs.items()}, "train": train_config(ctx, 0).to_dict(),
                "task": mix.fingerprint, "accuracy": acc, "exposures": exposures},
    )
