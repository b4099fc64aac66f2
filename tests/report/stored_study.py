"""A small stored study: Result files for C1–C8 written through ffnlab.results, as experiments write them.

The numbers have the shape of quick runs of the study (3 seeds, tiny models), including a
claim tested by two experiments that disagree, a failure record, and C7 neuron examples.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ffnlab.results import Anchor, Criterion, Estimate, Line, Result, Series, Table, atomic_write_text


def est(quantity: str, per_seed: list[float], unit: str = "") -> Estimate:
    n = len(per_seed)
    mean = sum(per_seed) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / (n - 1)) if n > 1 else 0.0
    half = 4.303 * sd / math.sqrt(n) if n == 3 else 0.0  # t(0.975, 2)
    return Estimate(quantity, mean, mean - half, mean + half, per_seed, unit)


def results() -> list[Result]:
    common = dict(version=1, mode="quick", seeds=[0, 1, 2], code_version="0.1.0+abc1234",
                  started="2025-11-25T08:00:00+00:00")
    layers = list(range(6))
    return [
        Result(name="c1-position", claim="C1", title="The FFN is position-wise", wall_seconds=41.2,
               method="Perturb every other position of the input and compare the FFN output at position t; "
                      "time attention and FFN sub-layers of one block as the sequence grows.",
               criterion=Criterion("max |Δ FFN out| at t", "<", 1e-6, "every FFN kind, every seed"),
               verdict="supported", reason="the FFN output at t did not change for any dense FFN kind "
                                           "(max 0); the capacity-limited MoE changed by 0.31",
               estimates=[est("max |Δ FFN out| at t", [0.0, 0.0, 0.0]),
                          est("crossover length", [1180.0, 1220.0, 1250.0], "tokens")],
               series=[Series("Share of forward time in the FFN vs sequence length", "sequence length (tokens)",
                              "FFN share of block time (%)",
                              [Line("measured", [64, 256, 1024, 4096], [71.0, 64.0, 47.0, 22.0], [2.0, 1.8, 2.5, 1.1]),
                               Line("FLOP accounting", [64, 256, 1024, 4096], [66.0, 62.0, 50.0, 25.0])],
                              log_x=True)],
               caveats=["CPU bf16 timings on 2 shared cores; ratios only."],
               command="ffnlab run c1-position --quick", **common),
        Result(name="c2-rank", claim="C2", title="Rank collapse with and without the FFN", wall_seconds=88.0,
               method="Dong et al.'s residual ratio per layer for four block variants at initialisation and "
                      "after training; 32 sequences of 128 tokens.",
               criterion=Criterion("attn-only / full residual ratio at last layer", "<", 0.5,
                                   "upper CI bound below threshold"),
               verdict="partly supported", reason="attention alone collapses, but the skip connection and not "
                                                  "the FFN prevents it",
               estimates=[est("attn-only / full residual ratio at last layer", [0.08, 0.11, 0.09]),
                          est("attn+ffn / full residual ratio at last layer", [0.41, 0.52, 0.47])],
               series=[Series("Residual ratio per layer", "layer", "‖res(H)‖ / ‖H‖ (ratio)",
                              [Line(v, layers, [0.9 * f ** (i + 1) for i in layers], [0.02] * 6)
                               for v, f in (("full", 0.99), ("attn+skip", 0.97), ("attn+ffn", 0.8),
                                            ("attn-only", 0.35))], log_y=True)],
               anchors=[Anchor("Dong et al. 2021", "pure attention collapses within a few layers; skip prevents it",
                               "attn-only ratio 0.09 at layer 6; attn+skip 0.75")],
               command="ffnlab run c2-rank --quick", **common),
        Result(name="c3-nonlinearity", claim="C3", title="Nonlinearity vs linear FFN vs no FFN", wall_seconds=300.5,
               method="Train matched models with the full FFN, the same FFN without its activation, and no FFN, "
                      "at matched parameters and depth; compare held-out loss.",
               criterion=Criterion("linear − full held-out loss", ">", 0.05, "lower CI bound above threshold"),
               verdict="supported", reason="removing the activation cost 0.21 nats, as much as removing the FFN",
               estimates=[est("linear − full held-out loss", [0.19, 0.22, 0.21], "nats"),
                          est("none − full held-out loss", [0.25, 0.27, 0.24], "nats")],
               series=[Series("Held-out loss by FFN kind", "variant (0 full, 1 linear, 2 none)", "loss (nats/token)",
                              [Line("matched params", [0, 1, 2], [3.91, 4.12, 4.17], [0.03, 0.02, 0.03]),
                               Line("matched depth", [0, 1, 2], [3.91, 4.10, 4.35], [0.03, 0.03, 0.04])],
                              kind="bar")],
               anchors=[Anchor("Shazeer 2020", "ReLU 1.997 vs SwiGLU 1.944 log-ppl", "relu 3.95, swiglu 3.91")],
               caveats=["4-layer models, 2M tokens of Shakespeare."],
               command="ffnlab run c3-nonlinearity --quick", **common),
        Result(name="c4-ablation", claim="C4", title="Per-layer FFN ablation", wall_seconds=60.0,
               method="Zero, mean and resample ablation of each FFN; loss increase per layer.",
               criterion=Criterion("mean loss increase (mean ablation)", ">", 0.1, "lower CI bound"),
               verdict="not supported", reason="only the first FFN matters; later ones change loss by < 0.05",
               estimates=[est("mean loss increase (mean ablation)", [0.06, 0.05, 0.07], "nats")],
               series=[Series("Loss increase when one FFN is ablated", "layer", "Δ loss (nats/token)",
                              [Line(k, layers, [1.2 / (i + 1) ** 2 * s for i in layers], [0.01] * 6)
                               for k, s in (("zero", 1.3), ("mean", 1.0), ("resample", 1.1))])],
               command="ffnlab run c4-ablation --quick", **common),
        Result(name="c4-ablation-smollm2", claim="C4", title="FFN ablation on SmolLM2-135M", wall_seconds=95.0,
               method="Mean ablation of each FFN of the dequantised SmolLM2-135M on 20k tokens.",
               criterion=Criterion("mean loss increase", ">", 0.1, "single model, bootstrap CI"),
               verdict="supported", reason="ablating any FFN raises loss by 0.4 nats on average",
               estimates=[Estimate("mean loss increase", 0.41, 0.35, 0.47, [], "nats")],
               caveats=["weights are dequantised 4-bit (Q4_1) values"],
               command="ffnlab run c4-ablation-smollm2 --quick", **common),
        Result(name="c5-accounting", claim="C5", title="Parameter and FLOP accounting", wall_seconds=0.4,
               method="Exact count per component over named_parameters().",
               criterion=Criterion("FFN share of parameters (BERT-base)", ">", 0.4, "exact"),
               verdict="supported", reason="51.8% in BERT-base, 45.6% in GPT-2 small",
               estimates=[Estimate("FFN share of parameters (BERT-base)", 0.518, 0.518, 0.518, [0.518], "")],
               tables=[Table("Parameters by component", ["model", "total", "FFN", "FFN share (%)"],
                             [["BERT-base", 109482240, 56669184, 51.8], ["GPT-2 small", 124439808, 56669184, 45.6],
                              ["SmolLM2-135M", 134515008, 79626240, 59.2]], note="tied embeddings counted once")],
               anchors=[Anchor("STUDY arithmetic", "BERT-base 109,482,240", "109,482,240")],
               command="ffnlab run c5-accounting --quick", **common),
        Result(name="c6-frontier", claim="C6", title="Efficiency frontier", wall_seconds=420.0,
               method="Held-out loss against parameters for width ratios, sharing, MoE, low rank, pruning.",
               criterion=Criterion("loss gap of shared FFN at 60% params", "<", 0.05, "upper CI bound"),
               verdict="partly supported", reason="sharing costs 0.04 nats, pruning half the neurons 0.3",
               estimates=[est("loss gap of shared FFN at 60% params", [0.03, 0.05, 0.04], "nats")],
               series=[Series("Loss vs parameters", "parameters (millions)", "held-out loss (nats/token)",
                              [Line("width sweep", [1.1, 1.6, 2.6, 4.6], [4.3, 4.1, 3.95, 3.9], [0.03] * 4),
                               Line("shared FFN", [1.2, 2.0], [4.2, 3.96], [0.02, 0.02]),
                               Line("MoE", [2.4, 4.4], [3.98, 3.88], [0.03, 0.02])], kind="scatter", log_x=True)],
               anchors=[Anchor("Pires et al. 2023", "shared encoder FFN: 35.3 BLEU at 60% params",
                               "+0.04 nats at 60% params")],
               command="ffnlab run c6-frontier --quick", **common),
        Result(name="c7-memories", claim="C7", title="Key-value memories in SmolLM2", wall_seconds=130.0,
               method="Top-25 trigger contexts per neuron over 30k tokens; value vectors through the unembedding.",
               criterion=Criterion("key-value agreement (upper layers)", ">", 0.01, "vs shuffled baseline"),
               verdict="supported", reason="2.9% of upper-layer neurons agree vs 0.02% shuffled",
               estimates=[Estimate("key-value agreement (upper layers)", 0.029, 0.022, 0.036, [], "")],
               series=[Series("Key-value agreement per layer", "layer", "agreement (%)",
                              [Line("measured", layers, [0.1, 0.3, 0.8, 1.5, 2.4, 3.1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
                               Line("shuffled", layers, [0.02] * 6)])],
               anchors=[Anchor("Geva et al. 2021", "≈0% lower → ≈3.5% upper layers", "0.1% → 3.1%")],
               extra={"neurons": [  # the shape c7-kv-memories writes
                   {"layer": 5, "neuron": 812, "triggers": ["The king of [[France]] said", "in [[Paris]] and",
                                                             "the French [[court]]"],
                    "activations": [4.21, 3.9, 3.5], "promotes": [" Paris", " France", " French", "⏎"]},
                   {"layer": 1, "neuron": 17, "triggers": [{"before": "Enter ", "token": "KING", "after": " HENRY"}],
                    "activations": [2.5], "promotes": [" HENRY", " RICHARD"]}],
                   "facts": ["Christopher Columbus sailed across the Atlantic in the year",
                             "The Sydney Opera House is located in the country of"],
                   "tokens_scanned": 30000},
               caveats=["weights are dequantised 4-bit (Q4_1) values"],
               command="ffnlab run c7-memories --quick", **common),
        Result(name="c8-facts", claim="C8", title="Facts vs in-context recall", wall_seconds=250.0,
               method="Synthetic facts seen 1–64 times vs in-context associative recall, with and without FFN.",
               criterion=Criterion("fact accuracy drop without FFN", ">", 0.2, "lower CI bound"),
               verdict="supported", reason="without the FFN fact accuracy fell by 0.46 while recall stayed at 0.98",
               estimates=[est("fact accuracy drop without FFN", [0.44, 0.49, 0.45])],
               series=[Series("Fact accuracy vs exposures", "times each fact was seen", "accuracy (fraction)",
                              [Line("with FFN", [1, 4, 16, 64], [0.05, 0.3, 0.8, 0.97], [0.02, 0.05, 0.04, 0.01]),
                               Line("without FFN", [1, 4, 16, 64], [0.03, 0.1, 0.3, 0.5], [0.02, 0.04, 0.05, 0.05])],
                              log_x=True)],
               command="ffnlab run c8-facts --quick", **common),
    ]


def write_study(root: Path) -> list[Result]:
    """Save the results under `root/experiments/` and a study record with one failure."""
    rs = results()
    for r in rs:
        r.save(root / "experiments" / f"{r.name}-{r.mode}.json")
    record = {"mode": "quick", "started": "2025-11-25T08:00:00+00:00", "wall_seconds": 1385.6,
              "code_version": "0.1.0+abc1234", "command": "ffnlab study --quick",
              "environment": {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0"},
              "experiments": {r.name: {"claim": r.claim, "status": "ok", "seconds": r.wall_seconds,
                                       "at": "2025-11-25T07:00:00+00:00"} for r in rs}}
    record["experiments"]["c2-rank-minilm"] = {"claim": "C2", "status": "failed", "seconds": 3.0,
                                              "at": "2025-11-25T08:10:00+00:00",
                                              "error": "RuntimeError: shape mismatch in blocks.3.attn.hook_z"}
    atomic_write_text(root / "study" / "quick.json", json.dumps(record, indent=1))
    return rs
