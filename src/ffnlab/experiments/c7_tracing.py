"""Claim C7 on real facts: causal tracing as ROME does it, with severed paths, and attribute extraction.

    c7-fact-tracing    SmolLM2-135M on the shipped facts it answers correctly (top-1): causal tracing
                       of hidden, MLP and attention states (Meng et al. 2022, window clamped as ROME's
                       code), severed paths (ROME Figure 2: restore a hidden state at the last subject
                       token with the later MLPs, or attention, frozen at their corrupted values), and
                       attention knockout at the last token (Geva et al. 2023). Intervals: bootstrap
                       over facts. The first FFN's effect is reported apart from the other layers'.

`measure` gives one record per fact; `summarise` turns records into the Result, so the criterion can
be checked on synthetic records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch

from ffnlab.analysis.bootstrap import bootstrap_mean
from ffnlab.analysis.extraction import extraction
from ffnlab.analysis.tracing import (SEVERED, default_window, embedding_std, fact_prompts, known_facts, rome_window,
                                     shipped_facts, trace)
from ffnlab.errors import FFNLabError
from ffnlab.experiments.common import few_threads
from ffnlab.experiments.items import decide_items
from ffnlab.experiments.registry import Context, Findings, experiment
from ffnlab.open import open_model
from ffnlab.results import Criterion, Deviation, Estimate, Line, Series, Table


@dataclass(frozen=True)
class TracingConfig:
    model: str = "smollm2"
    facts: int = 100  # traced, of those the model knows (SmolLM2-135M knows 150 of the 376 shipped)
    samples: int = 3  # noise samples per restoration
    bootstrap: int = 2000  # resamples of the facts
    candidates: int = 1000  # shipped facts checked per fact traced (at most all of them)


# measured on one thread (CPU time): quick about 40 s with the model's loading (13 facts checked, 4 traced);
# full about 11 s a fact at 3 samples (240 restorations x 3 + 90 knockouts), so about 20 min for 100 facts
QUICK, FULL = TracingConfig(facts=4, samples=2, candidates=3), TracingConfig()

CRITERION = Criterion(
    "drop of the indirect effect at the last subject token when the later MLPs are severed, minus the drop "
    "when attention is severed, mean over layers 1 to L/2 - 1 (p)", ">", 0.0,
    "mean over the known facts traced, 95% bootstrap interval over facts; requirement: the windowed MLP "
    "effect at the last subject token peaks, among windows without layer 0, in the first two thirds of the "
    "layers, and the noise takes away a mean total effect of at least 0.05")
MEANINGFUL_TOTAL = 0.05
TRACE_KINDS = ("resid", "mlp", "attn")
AT = ("last subject", "last")
PREVIOUS = Deviation(
    2, "criterion changed from 'peak MLP minus peak attention indirect effect at the last subject token > 0 (mean "
    "over 8 facts, windows shifted at the edges), requirement: knowledge neurons beat random' to the severed-path "
    "contrast over layers 1..L/2-1 with a bootstrap interval over facts and a requirement on where the MLP peak "
    "lies; the knowledge neurons moved to their own experiment (c7-knowledge-neurons)",
    "v1's quick and full results on SmolLM2 (MLP curve flat at 0.121 over layers 0-3, the peak being the first "
    "FFN re-encoding the noised token)",
    "v1's peak was an artifact of the shifted window and layer 0; peaks of two curves are not a causal contrast")


def measure(model, facts, noise: float, cfg: TracingConfig) -> list[dict]:
    """One record per fact: total effect, curves (L,) per kind at the last subject and last token, and the
    attention knockout / FFN zeroing at the last token."""
    window, records = default_window(model.n_layers), []
    for i, f in enumerate(facts):
        last_subject, last = f.subject[1] - 1, len(f.tokens) - 1
        tr = trace(model, f.tokens, f.subject, f.answer, noise, kinds=TRACE_KINDS, positions=[last_subject, last],
                   samples=cfg.samples, seed=i)
        sev = trace(model, f.tokens, f.subject, f.answer, noise, kinds=tuple(SEVERED), positions=[last_subject],
                    samples=cfg.samples, seed=i)
        ex = extraction(model, f.tokens, f.subject, f.answer, window)
        curves = {f"{k} @ {where}": tr.effects[k][:, j].tolist() for k in TRACE_KINDS for j, where in enumerate(AT)}
        curves.update({f"{k} @ last subject": sev.effects[k][:, 0].tolist() for k in SEVERED})
        records.append({"fact": f.text, "p_clean": tr.p_clean, "p_corrupt": tr.p_corrupt,
                        "total": tr.total_effect, "curves": curves,
                        "extraction": {k: v.tolist() for k, v in ex.effects.items()}})
    return records




def _curve(records: list[dict], key: str, n: int, group: str = "curves") -> tuple[list[float], list[float]]:
    """Mean over facts per layer and the half-width of its bootstrap interval."""
    rows = torch.tensor([r[group][key] for r in records], dtype=torch.float64)  # (facts, L)
    means, err = [], []
    for layer in range(rows.shape[1]):
        m, lo, hi = bootstrap_mean(rows[:, layer].tolist(), n, seed=layer)
        means.append(m)
        err.append((hi - lo) / 2)
    return means, err


def summarise(records: list[dict], cfg: TracingConfig, n_layers: int, window: int, known: int, shipped: int,
              mode: str, method_extra: str = "") -> Findings:
    if not records:
        raise FFNLabError("no facts traced")
    half = range(1, max(2, n_layers // 2))
    drop = {c: [sum(r["curves"]["resid @ last subject"][la] - r["curves"][f"resid-sever-{c} @ last subject"][la]
                    for la in half) / len(half) for r in records] for c in ("mlp", "attn")}
    contrast = [a - b for a, b in zip(drop["mlp"], drop["attn"])]
    mean, lo, hi = bootstrap_mean(contrast, cfg.bootstrap)
    est = Estimate(CRITERION.quantity, mean, lo, hi, contrast, "p")
    total = bootstrap_mean([r["total"] for r in records], cfg.bootstrap)
    mlp_curve, _ = _curve(records, "mlp @ last subject", cfg.bootstrap)
    free = [la for la in range(n_layers) if rome_window(la, window, n_layers).start >= 1]  # windows without layer 0
    peak = max(free, key=lambda la: mlp_curve[la])
    verdict, reason = decide_items(CRITERION, est, len(records), "facts", requirements=[
        (peak < 2 * n_layers / 3, f"the MLP effect at the last subject token peaks at layer {peak} of {n_layers} "
                                  "(windows without layer 0)"),
        (total[0] >= MEANINGFUL_TOTAL, f"mean total effect {total[0]:.3f} >= {MEANINGFUL_TOTAL}")])

    x = [float(la) for la in range(n_layers)]
    curves = {k: _curve(records, k, cfg.bootstrap) for k in records[0]["curves"]}
    series = [Series(f"Indirect effect at the {where} token", "layer (centre of the window for MLP/attention)",
                     "indirect effect (p)", [Line(k.split(" @ ")[0], x, *curves[k]) for k in curves
                                             if k.endswith(f"@ {where}")]) for where in AT]
    ext = {k: _curve(records, k, cfg.bootstrap, "extraction") for k in records[0]["extraction"]}
    series.append(Series("Attribute extraction at the last token (Geva et al. 2023)", "centre layer of the window",
                         "relative change of p(answer)", [Line(k, x, *v) for k, v in ext.items()]))
    rows = []
    for k, (m, e) in curves.items():
        kind = k.split(" @ ")[0]
        rest = [la for la in range(n_layers) if (rome_window(la, window, n_layers).start >= 1 if kind in ("mlp", "attn")
                                                 else la >= 1)]
        rows.append([k, m[0], e[0], max(m[la] for la in rest), sum(m[la] for la in rest) / len(rest)])
    table = Table("Layer 0 apart: indirect effect (p) at layer 0 (the window holding the first FFN) vs the other "
                  "layers (for MLP/attention: windows without layer 0)",
                  ["curve", "layer 0", "± CI", "peak, rest", "mean, rest"], rows)
    ext_rows = []
    for k, (m, e) in ext.items():
        at = min(free, key=lambda la: m[la])
        ext_rows.append([k, m[0], m[at], e[at], at])
    severed = Table("Severed paths at the last subject token, mean over layers 1..L/2-1",
                    ["component frozen", "drop of the indirect effect (p)", "95% CI low", "95% CI high"],
                    [[c, *bootstrap_mean(drop[c], cfg.bootstrap)] for c in ("mlp", "attn")])
    return Findings(
        method=(f"{cfg.model}: {known} of {shipped} shipped facts checked answered correctly (top-1, canonical "
                "template; facts whose subject ends inside a token are left out); "
                f"{len(records)} traced. Subject embeddings + N(0, (3σ)²) noise, {cfg.samples} samples; hidden "
                f"states restored one layer at a time, MLP/attention outputs over ROME's window of {window} layers "
                f"(clamped at the edges), at the last subject and the last token. Severed paths: the hidden state "
                f"at the last subject token restored while the MLP (or attention) outputs at that token stay at "
                f"their corrupted values in the later layers. Attribute extraction: attention from the last token "
                f"to the subject tokens (or to the other tokens) blocked in the same window of layers, and the FFN "
                f"outputs at the last token zeroed, clean input. Intervals: 95% bootstrap over facts "
                f"({cfg.bootstrap} resamples).{method_extra}"),
        criterion=CRITERION, verdict=verdict, reason=reason, estimates=[est],
        tables=[severed, table, Table("Attribute extraction at the last token: relative change of p(answer), "
                                      "the window holding layer 0 apart from the largest drop among the others",
                                      ["intervention", "layer 0", "largest drop, rest", "± CI", "at layer"],
                                      ext_rows)],
        series=series,
        caveats=[
            "Context only, not comparable: Meng et al. 2022 (ROME) report, for GPT-2 XL (48 layers, 1.5B) on 1,000 "
            "known facts with noise 3σ and a 10-layer window, an MLP indirect-effect peak of 6.6% vs 1.6% for "
            f"attention at the last subject token and a total effect of 18.6%. Here: SmolLM2-135M (30 layers), "
            f"{len(records)} facts of our own set, {cfg.samples} noise samples, a {window}-layer window; our mean "
            f"total effect is {total[0]:.3f} (95% CI {total[1]:.3f} to {total[2]:.3f}).",
            "Geva et al. 2023 knock out attention edges in GPT-2 XL / GPT-J with a 9-layer window; ours scales "
            "ROME's window to the depth.",
            "Localisation is not editability (Hase et al. 2023): where tracing points need not be where an edit "
            "works.",
            "Zeroing the FFN outputs at the last token is a zero ablation: in windows holding the first layers it "
            "breaks the stream at that token for any prediction, not only the attribute; the 'non-subject' "
            "knockout includes the first token, which many heads use as a sink.",
        ] + (["Quick mode: a handful of facts; the interval is wide and the verdict indicative."]
             if mode == "quick" else []),
        extra={"records": records, "mlp_peak_layer": peak, "total_effect": total},
        config={**asdict(cfg), "window": window, "known": known, "shipped": shipped, "layers_in_contrast":
                [half.start, half.stop - 1]})


@experiment("c7-fact-tracing", claim="C7", version=2, order=71, seeded=False, deviations=(PREVIOUS,),
            title="Causal tracing with severed paths, and attribute extraction, on facts SmolLM2 knows")
def fact_tracing(ctx: Context) -> Findings:
    cfg = QUICK if ctx.quick else FULL
    cfg = TracingConfig(**{**asdict(cfg), "model": ctx.options.get("model", cfg.model)})
    with few_threads():
        opened = open_model(cfg.model, progress=ctx.progress, device=ctx.device)
        model = opened.model
        shipped = fact_prompts(opened.encode, shipped_facts())
        # quick: only as many candidates as it takes, spread over the relations; full: every shipped fact
        checked = shipped[::max(1, len(shipped) // (cfg.facts * cfg.candidates))]
        facts = known_facts(model, checked)
        if not facts:
            raise FFNLabError(f"{opened.name} answers none of the shipped facts correctly")
        noise = 3 * embedding_std(model, opened.tokens_of(ctx.data, 4096).view(-1, 128)[:8])
        # spread evenly over the known facts (so over the relations), not the first relation's facts only
        n = min(cfg.facts, len(facts))
        records = measure(model, [facts[i * len(facts) // n] for i in range(n)], noise, cfg)
    result = summarise(records, cfg, model.n_layers, default_window(model.n_layers), len(facts), len(checked),
                       ctx.mode, f" σ = {noise / 3:.4f}.")
    return dataclasses.replace(result, caveats=opened.caveats + result.caveats)
