"""Claim C7 — knowledge neurons (Dai et al. 2022), with a matched baseline and specificity.

    c7-knowledge-neurons   per fact the model knows: integrated-gradients attribution on each of its
                           prompts (the canonical one and paraphrases), neurons kept when most prompts
                           share them; suppression of those neurons vs as many random neurons matched
                           on layer and mean |activation|, and vs unrelated facts (specificity);
                           how often the same neurons recur across facts

`measure` returns plain records, `judge` turns them into the verdict, so every outcome of the
criterion can be reached from synthetic numbers in a test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ffnlab.analysis.bootstrap import bootstrap_mean
from ffnlab.analysis.knowledge import (layer_attributions, matched_random, mean_abs_activation,
                                       overlap, refine, suppression)
from ffnlab.analysis.attribution import answer_prob
from ffnlab.analysis.tracing import fact_prompts, known_facts, shipped_facts
from ffnlab.errors import FFNLabError
from ffnlab.experiments.common import few_threads
from ffnlab.experiments.items import decide_items, item_estimate
from ffnlab.experiments.registry import Context, Findings, experiment
from ffnlab.open import Opened, open_model
from ffnlab.results import Anchor, Criterion, Estimate, Line, Series, Table

SMOLLM2 = "smollm2"
CRITERION = Criterion(
    "excess suppression: relative change of p(answer) with matched random neurons zeroed minus with the fact's "
    "own neurons zeroed (mean over facts)", ">", 0.0,
    "95% bootstrap interval over facts above 0; requirement: the fact's own neurons lower its p(answer) more than "
    "they lower unrelated facts' (specificity, interval over facts above 0)")
DAI = ("Dai et al. 2022 (BERT-base, masked fill-in prompts of PARAREL relations, ~4 neurons refined over "
       "paraphrases, cloze probability) — context, not like for like")


@dataclass(frozen=True)
class NeuronsConfig:
    facts: int  # facts attributed (the first the model knows, round-robin over relations)
    prompts: int  # prompts per fact: the canonical one and up to prompts - 1 paraphrases
    steps: int  # integrated-gradients path points
    random_draws: int  # matched random sets per fact
    unrelated: int  # unrelated facts each fact's neurons are tried on
    threshold: float = 0.2  # x the prompt's best attribution (Dai et al.)
    majority: float = 0.5  # kept when above the threshold in more than this share of the prompts
    max_neurons: int = 5
    pool: int = 16  # matched random neurons drawn among this many closest in mean |activation|


# quick: one fact of each of 3 relations, refined over 3 prompts (2 of 3 must share a neuron)
QUICK = NeuronsConfig(facts=3, prompts=3, steps=4, random_draws=2, unrelated=2)
# full: ~2.5 s of one core per 64-row attribution pass, 4 passes a prompt: ~15 min for 80 prompts
FULL = NeuronsConfig(facts=20, prompts=4, steps=8, random_draws=5, unrelated=6)


@dataclass
class Fact:
    text: str
    relation: str
    prompts: list[torch.Tensor]  # each (1, T); the canonical prompt first
    answer: int


def round_robin(facts: list[dict]) -> list[dict]:
    """Facts ordered one relation at a time (the first of each relation, then the second, ...)."""
    queues: dict[str, list[dict]] = {}
    for f in facts:
        queues.setdefault(f.get("relation", "fact"), []).append(f)
    return [q[i] for i in range(max(map(len, queues.values()), default=0)) for q in queues.values() if i < len(q)]


def select_facts(opened: Opened, cfg: NeuronsConfig) -> tuple[list[Fact], int]:
    """The first `cfg.facts` facts, round-robin over relations, that the model answers with its top prediction
    on the canonical prompt, with their paraphrases; and how many facts were checked to find them."""
    out, checked = [], 0
    for d in round_robin(shipped_facts()):
        if len(out) == cfg.facts:
            break
        checked += 1
        fps = known_facts(opened.model, fact_prompts(opened.encode, [d]))
        if not fps:
            continue
        fp = fps[0]
        para = [p for p in dict.fromkeys(d.get("paraphrases", [])) if p != fp.text][: cfg.prompts - 1]
        prompts = [torch.tensor([fp.tokens])] + [torch.tensor([opened.encode(p)]) for p in para]
        out.append(Fact(fp.text, d.get("relation", "fact"), prompts, fp.answer))
    if not out:
        raise FFNLabError(f"{opened.name} answers none of the shipped facts correctly")
    return out, checked


def unrelated_to(facts: list[Fact], i: int, n: int) -> list[int]:
    """Up to `n` other facts with another answer, of other relations where there are such."""
    others = [j for j in range(len(facts)) if j != i and facts[j].answer != facts[i].answer]
    other_rel = [j for j in others if facts[j].relation != facts[i].relation]
    pick = other_rel if len(other_rel) >= min(n, len(others)) else others
    return sorted(pick, key=lambda j: (j - i) % len(facts))[:n]


def measure(opened: Opened, facts: list[Fact], cfg: NeuronsConfig, seed: int = 0) -> dict:
    """Per fact: its refined neurons and the relative change of p(answer) when they are zeroed (own),
    when matched random neurons are (random), and on unrelated facts (unrelated)."""
    model = opened.model
    sets = []
    for f in facts:
        scores = [layer_attributions(model, p, f.answer, cfg.steps) for p in f.prompts]
        sets.append(refine(scores, cfg.threshold, cfg.majority, cfg.max_neurons))
    mean_abs = mean_abs_activation(model, [p for f in facts for p in f.prompts])  # (L, F)
    attributed = sorted({n for s in sets for n in s})
    clean = [[answer_prob(model, p, f.answer) for p in f.prompts] for f in facts]
    g = torch.Generator().manual_seed(seed)
    records = []
    for i, (f, own) in enumerate(zip(facts, sets)):
        rand_sets = [matched_random(own, mean_abs, g, avoid=attributed, pool=cfg.pool) for _ in range(cfg.random_draws)]
        others = unrelated_to(facts, i, cfg.unrelated)
        act = lambda ns: float(sum(mean_abs[n] for n in ns) / len(ns)) if ns else float("nan")  # noqa: E731
        records.append({
            "fact": f.text, "relation": f.relation, "prompts": len(f.prompts), "neurons": [list(n) for n in own],
            "p": sum(clean[i]) / len(clean[i]),
            "own": suppression(model, f.prompts, f.answer, own, clean[i]),
            "random": (sum(suppression(model, f.prompts, f.answer, r, clean[i]) for r in rand_sets) / len(rand_sets)
                       if own else 0.0),
            "unrelated": (sum(suppression(model, facts[j].prompts[:1], facts[j].answer, own, clean[j][:1])
                              for j in others) / len(others) if others and own else float("nan")),
            "unrelated_facts": len(others),
            "own_mean_abs": act(own), "random_mean_abs": sum(act(r) for r in rand_sets) / len(rand_sets) if own
            else float("nan")})
    return {"records": records, "overlap": asdict(overlap(sets, model.n_layers))}


def judge(records: list[dict]) -> tuple[list[Estimate], str, str, int]:
    """(estimates, verdict, reason, facts used): the criterion over facts that kept a neuron set."""
    used = [r for r in records if r["neurons"] and r["unrelated"] == r["unrelated"]]
    if not used:
        e = item_estimate(CRITERION.quantity, float("nan"), float("nan"), float("nan"))
        return [e], "not supported", "no fact kept neurons shared by most of its prompts", 0
    excess = bootstrap_mean([r["random"] - r["own"] for r in used], seed=1)
    spec = bootstrap_mean([r["unrelated"] - r["own"] for r in used], seed=2)
    own = bootstrap_mean([r["own"] for r in used], seed=3)
    est = [item_estimate(CRITERION.quantity, *excess),
           item_estimate("specificity: unrelated facts' minus own fact's relative change of p(answer)", *spec),
           item_estimate("own neurons zeroed: relative change of p(answer)", *own)]
    verdict, reason = decide_items(CRITERION, est[0], len(used), "facts", requirements=[
        (spec[1] > 0, f"specificity {spec[0]:+.3f} (95% CI {spec[1]:+.3f} to {spec[2]:+.3f}): a fact's own "
                      "neurons lower its p(answer) more than unrelated facts'")])
    return est, verdict, reason, len(used)


def matching_note(records: list[dict]) -> str:
    """How well the random sets matched the attributed ones in mean |activation| (the loudest neurons have few peers)."""
    ratios = sorted(r["random_mean_abs"] / r["own_mean_abs"] for r in records
                    if r["neurons"] and r["own_mean_abs"] > 0)
    if not ratios:
        return "No fact kept a neuron set, so no random set was drawn."
    return (f"Matching: the random sets' mean |activation| is {ratios[len(ratios) // 2]:.2f} x the attributed sets' "
            f"(median over facts; range {ratios[0]:.2f}-{ratios[-1]:.2f}); where it is far below 1, the attributed "
            "neurons are louder than any peers of their layer and the baseline is weaker than intended.")


def method_text(name: str, cfg: NeuronsConfig, checked: int, n_facts: int) -> str:
    return (f"{name}: shipped facts taken round-robin over relations; {n_facts} of the {checked} checked are "
            "answered with the model's top prediction on the canonical prompt and attributed, each on up to "
            f"{cfg.prompts} prompts (the canonical one and paraphrases of the relation). Integrated gradients "
            f"({cfg.steps} path points from 0 to the actual activation, one layer at a time, as Dai et al.) of "
            "p(answer) for every FFN neuron at the last position; a neuron is kept when "
            f"its attribution exceeds {cfg.threshold:g} x the prompt's best in more than {100 * cfg.majority:.0f}% of "
            f"the fact's prompts, at most {cfg.max_neurons} (strongest mean attribution first). Suppression zeroes "
            "the neurons at every position; effects are relative changes of p(answer), averaged over the fact's "
            f"prompts. Baseline: {cfg.random_draws} sets of random neurons of the same layers, each drawn among the "
            f"{cfg.pool} neurons closest in mean |activation| over all attributed prompts (no attributed neuron of "
            f"any fact). Specificity: the same neurons zeroed on up to {cfg.unrelated} unrelated facts (another "
            "answer, another relation where there is one; canonical prompt). Intervals: 95% bootstrap over facts. "
            "Localisation is not editability: Hase et al. 2023 found that where a fact localises does not predict "
            "where editing it works, and Niu et al. 2024 that zeroing or editing 'knowledge neurons' rarely flips "
            "the categorical prediction; these numbers say which neurons carry p(answer) here, not that the fact "
            "is stored in them.")


@experiment("c7-knowledge-neurons", claim="C7", version=1, order=72, seeded=False,
            title="Knowledge neurons, refined over paraphrases, against a matched baseline and unrelated facts")
def knowledge_neurons(ctx: Context) -> Findings:
    cfg = QUICK if ctx.quick else FULL
    with few_threads():
        opened = open_model(ctx.options.get("model", SMOLLM2), progress=ctx.progress, device=ctx.device)
        facts, checked = select_facts(opened, cfg)
        res = measure(opened, facts, cfg)
    records, ov = res["records"], res["overlap"]
    estimates, verdict, reason, used = judge(records)
    n_layers = opened.model.n_layers
    upper = sum(ov["by_layer"][-(n_layers // 3):])
    table = Table("Knowledge neurons per fact: relative change of p(answer) when zeroed",
                  ["fact", "prompts", "neurons", "p(answer)", "own", "matched random", "unrelated facts",
                   "mean |act| own / random"],
                  [[r["fact"], r["prompts"], len(r["neurons"]), r["p"], r["own"], r["random"], r["unrelated"],
                    f"{r['own_mean_abs']:.3g} / {r['random_mean_abs']:.3g}"] for r in records])
    recur = Table("Overlap of neuron sets across facts", ["quantity", "value"],
                  [["facts", ov["facts"]], ["distinct neurons", ov["neurons"]],
                   *[[f"neurons in >= {k} facts' sets", v] for k, v in ov["recurring"].items()],
                   ["mean Jaccard over pairs of sets", ov["mean_jaccard"]],
                   [f"distinct neurons in the upper third of layers ({n_layers - n_layers // 3}-{n_layers - 1})",
                    upper]])
    own = estimates[2]
    return Findings(
        method=method_text(opened.name, cfg, checked, len(facts)),
        criterion=CRITERION, verdict=verdict, reason=reason, estimates=estimates, tables=[table, recur],
        series=[Series("Knowledge neurons by layer (distinct, over all facts)", "layer", "neurons",
                       [Line("neurons", [float(i) for i in range(n_layers)], [float(v) for v in ov["by_layer"]])],
                       kind="bar")],
        anchors=[Anchor(DAI, "zeroing the refined neurons: p(answer) −29%; random neurons −1.5%",
                        f"{100 * own.mean:+.0f}% (95% CI {100 * own.ci_low:+.0f} to {100 * own.ci_high:+.0f}%, "
                        f"{used} facts) on {opened.name}: a causal model, next-token prompts, up to "
                        f"{cfg.max_neurons} neurons, random baseline matched on mean |activation|")],
        caveats=opened.caveats + [
            "Dai et al.'s numbers are context only: another model (BERT-base), task (masked cloze on PARAREL) "
            "and baseline (unmatched random neurons).",
            "Integrated gradients at the last position only; neurons at earlier positions are not attributed.",
            matching_note(records),
            *(["Quick mode: a handful of facts and prompts, few path points; the verdict is indicative."]
              if ctx.quick else [])],
        extra={"facts": records, "overlap": ov},
        config={"model": opened.name, **asdict(cfg), "facts_checked": checked})
