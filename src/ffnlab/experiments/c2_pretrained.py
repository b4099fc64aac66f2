"""C2 on real models: does the FFN keep attention from collapsing token diversity in MiniLM and SmolLM2?

Dong, Cordonnier, Loukas 2021's residual ratio ||res(H)|| / ||H|| (`ffnlab.analysis.rank`):

- all-MiniLM-L6-v2, trained and at initialisation, under the four surgery variants (full block,
  attention+skip, attention+FFN without skip, pure attention); the contrast that isolates the FFN
  is attention+FFN against pure attention, both without skips;
- what each FFN does to the ratio where it sits in the real network, per layer: ratio(resid_post) /
  ratio(resid_mid), in MiniLM and in SmolLM2-135M (float32, dequantised Q4_1 weights).

Ratios below float precision (`analysis.rank.floor_of`) are floored there and reported as
"collapsed (below float precision)": two collapsed streams make no contrast.
"""

from __future__ import annotations

import math
import statistics

import torch
from torch import Tensor

from ffnlab.analysis.rank import VARIANTS, describe_ratio, floor_of, rank_collapse, residual_ratio
from ffnlab.device import module_device
from ffnlab.experiments.registry import Context, Findings, experiment
from ffnlab.experiments.verdict import decide, estimate
from ffnlab.model.hooks import hooks
from ffnlab.model.names import block_hook
from ffnlab.pretrained import PretrainedModel, load
from ffnlab.results import Anchor, Criterion, Deviation, Estimate, Line, Series, Table

SLOWS = 1.0  # log10: attention+FFN keeps >= 10x the residual of pure attention (as C2 on own models)
CRITERION = Criterion(
    "log10 last-layer residual ratio, attention+FFN / pure attention (both without skips), trained MiniLM", ">",
    SLOWS, "95% t-interval over seeds (text windows) above 1: without skips the FFN keeps >= 10x pure attention's "
           "token diversity (ratios floored at float precision, so two collapsed streams give 0); partly if "
           "instead the trained FFNs add diversity where they sit: the mean over layers of ratio(resid_post) / "
           "ratio(resid_mid) above 1 in both MiniLM and SmolLM2")
MEASURE = {"quick": {"minilm": (32, 128), "smollm2": (8, 64)}, "full": {"minilm": (32, 128), "smollm2": (32, 128)}}
DEVIATIONS = (Deviation(2, "criterion changed from 'final ratio pure attention / full block < 0.1 (trained MiniLM)' "
                           "to 'log10 of attention+FFN / pure attention > 1, both without skips, floored at float "
                           "precision; partly if the FFNs add diversity where they sit in MiniLM and SmolLM2'",
                        "version 1's quick results on MiniLM (after 6 layers: pure attention 4.5e-06, attention+FFN "
                        "1.7e-07, attention+skip 0.61, full 0.84)",
                        "the old criterion compared pure attention with the full block, a contrast in which the "
                        "skip connection, not the FFN, keeps diversity: it said nothing about the FFN"),)


@torch.no_grad()
def around_ffn(model, tokens: Tensor, batch_size: int = 8) -> dict[str, list[float]]:
    """Per layer: the mean residual ratio before the FFN (resid_mid) and after it (resid_post), and the mean
    over sequences of their quotient (`analysis.rank.across_ffn`); "floor": the float floor of the activations."""
    n = model.n_layers
    sites = {(i, where): block_hook(i, f"hook_resid_{where}") for i in range(n) for where in ("mid", "post")}
    ratios: dict[tuple[int, str], list[Tensor]] = {key: [] for key in sites}
    dtypes: set[torch.dtype] = set()

    def recorder(key):
        def record(act: Tensor) -> None:
            ratios[key].append(residual_ratio(act.detach()).cpu())
            dtypes.add(act.dtype)
        return record

    device = module_device(model)
    with hooks(model, {name: recorder(key) for key, name in sites.items()}):
        for start in range(0, tokens.shape[0], batch_size):
            model(tokens[start:start + batch_size].to(device))
    r = {key: torch.cat(parts) for key, parts in ratios.items()}
    return {"mid": [float(r[(i, "mid")].mean()) for i in range(n)],
            "post": [float(r[(i, "post")].mean()) for i in range(n)],
            "across": [float((r[(i, "post")] / r[(i, "mid")].clamp_min(1e-300)).mean()) for i in range(n)],
            "floor": [max(map(floor_of, dtypes))]}


def c2_pretrained_verdict(ffn_vs_pure: Estimate, across_means: dict[str, float]) -> tuple[str, str]:
    """The criterion (see CRITERION): the no-skip contrast, lifted to 'partly' by FFNs that add diversity."""
    adds = all(v > 1 for v in across_means.values())
    listed = ", ".join(f"{k} {v:.3g}" for k, v in across_means.items())
    return decide(CRITERION, ffn_vs_pure, partial=(adds, f"the FFNs add token diversity where they sit (mean "
                                                         f"ratio after / before each FFN: {listed})"))


def _mean(rows: list[list[float]]) -> list[float]:
    return [statistics.mean(col) for col in zip(*rows)]


@experiment("pretrained-rank-collapse", claim="C2", version=2, order=57, deviations=DEVIATIONS,
            title="Rank collapse in MiniLM and SmolLM2: surgery contrasts and each FFN's effect on token diversity")
def pretrained_rank_collapse(ctx: Context) -> Findings:
    from transformers import BertModel

    from ffnlab.experiments.pretrained import MINILM, SMOLLM2, _caveats, _meta, token_windows

    sizes = MEASURE["quick" if ctx.quick else "full"]
    n_mini, len_mini = sizes["minilm"]
    n_smol, len_smol = sizes["smollm2"]
    trained = load(MINILM, progress=ctx.progress, device=ctx.device)
    torch.manual_seed(0)
    init = PretrainedModel(BertModel(trained.hf.config), None, {"name": "MiniLM at initialisation"}).eval()
    init = init.to(module_device(trained))
    smol = load(SMOLLM2, dtype=torch.float32, progress=ctx.progress, device=ctx.device)
    profiles: dict[tuple[str, str], list] = {}
    around: dict[str, list[dict]] = {"MiniLM trained": [], "MiniLM init": [], "SmolLM2-135M": []}
    for seed in ctx.seeds:
        tokens = token_windows(trained, ctx, n_mini, len_mini, seed)  # Dong et al.: 32 sequences of 128 tokens
        for label, model in (("trained", trained), ("init", init)):
            for v in VARIANTS:
                profiles.setdefault((label, v), []).append(rank_collapse(model, tokens, v, batch_size=len(tokens)))
            around[f"MiniLM {label}"].append(around_ffn(model, tokens, batch_size=len(tokens)))
        around["SmolLM2-135M"].append(around_ffn(smol, token_windows(smol, ctx, n_smol, len_smol, seed), 8))
    floor = max([p.floor for ps in profiles.values() for p in ps] + [a["floor"][0] for r in around.values()
                                                                      for a in r])

    def last(label: str, v: str) -> list[float]:  # per seed, floored at float precision
        return [max(p.mean[-1], floor) for p in profiles[(label, v)]]

    contrast = [math.log10(a / b) for a, b in zip(last("trained", "attn+ffn"), last("trained", "attn-only"))]
    across_mean = {k: statistics.mean(statistics.mean(a["across"]) for a in runs) for k, runs in around.items()}
    est = [estimate(CRITERION.quantity, contrast),
           estimate("log10 last-layer residual ratio, attention+FFN / pure attention, MiniLM at initialisation",
                    [math.log10(a / b) for a, b in zip(last("init", "attn+ffn"), last("init", "attn-only"))]),
           estimate("last-layer residual ratio, attention+skip / full block (FFN removed, skip kept), trained MiniLM",
                    [a / b for a, b in zip(last("trained", "attn+skip"), last("trained", "full"))]),
           *[estimate(f"mean over layers of ratio(resid_post) / ratio(resid_mid), {k} (1 = the FFN changes nothing)",
                      [statistics.mean(a["across"]) for a in runs]) for k, runs in around.items()]]
    verdict, reason = c2_pretrained_verdict(est[0], {k: v for k, v in across_mean.items() if k != "MiniLM init"})
    layers = list(range(1, trained.n_layers + 1))
    lines, rows = [], []
    for (label, v), ps in profiles.items():
        mean = _mean([p.mean for p in ps])
        embed = statistics.mean(p.embed for p in ps)
        lines.append(Line(f"{v} ({label})", [0, *layers], [embed, *mean]))
        rows.append([label, v, describe_ratio(embed, floor), *[describe_ratio(y, floor) for y in mean]])
    across_rows, across_lines = [], []
    for k, runs in around.items():
        mid, post, acr = _mean([a["mid"] for a in runs]), _mean([a["post"] for a in runs]), _mean([a["across"]
                                                                                                    for a in runs])
        for i in range(len(acr)):
            ratio = "n/a (collapsed before the FFN)" if mid[i] < floor else f"{acr[i]:.3g}"
            across_rows.append([k, i, describe_ratio(mid[i], floor), describe_ratio(post[i], floor), ratio])
        across_lines.append(Line(k, [float(i) for i in range(len(acr))], acr))
    plain = (f"Without skips, the FFN {'slows' if est[0].mean > SLOWS else 'does not slow'} collapse in trained MiniLM "
             f"(attention+FFN / pure attention = 10^{est[0].mean:.2f} after {trained.n_layers} layers); with skips, "
             f"removing the FFN keeps {est[2].mean:.2g} of the full block's ratio, so the skip connection is what "
             "prevents collapse there; FFNs that add diversity (after / before > 1): "
             + ", ".join(f"{k} {sum(x > 1 for x in acr)} of {len(acr)} layers (median {statistics.median(acr):.3g}, "
                         f"largest {max(acr):.3g} at layer {acr.index(max(acr))})"
                         for k, acr in ((k, _mean([a['across'] for a in runs])) for k, runs in around.items())))
    return Findings(
        method="Residual ratio ||res(H)||/||H|| (norm sqrt(||.||_1 ||.||_inf), res = H minus its row mean). "
               f"MiniLM: after each block, on {n_mini} test windows of {len_mini} tokens per seed, for the block as "
               "trained, without the FFN (attn+skip), without the skip around attention (attn+ffn, Dong's SAN+MLP) "
               "and with neither (attn-only); the trained model and the same architecture at initialisation. "
               f"Around each FFN: ratio at resid_mid and resid_post and their quotient per sequence, in MiniLM (as "
               f"above) and in SmolLM2-135M (float32; {n_smol} test windows of {len_smol} tokens per seed). Ratios "
               f"below {floor:.2g} (10 eps of float32) are floored there and reported as collapsed. Intervals: 95% "
               "t over seeds (each seed draws other text windows).",
        criterion=CRITERION, verdict=verdict, reason=f"{reason}. {plain}.", estimates=est,
        tables=[Table("MiniLM: residual ratio per layer (layer 0 = embeddings)",
                      ["model", "variant", "embed", *[f"L{i}" for i in layers]], rows),
                Table("Residual ratio before and after each FFN (full model)",
                      ["model", "layer", "before FFN (resid_mid)", "after FFN (resid_post)", "after / before"],
                      across_rows, note="above 1 the FFN adds token diversity, below 1 it removes some; MiniLM is "
                                        "post-LN, so 'after' also includes the LayerNorm after attention")],
        series=[Series("all-MiniLM-L6-v2: rank collapse by surgery variant", "layer", "residual ratio", lines,
                       log_y=True),
                Series("What each FFN does to token diversity: ratio(resid_post) / ratio(resid_mid)", "layer",
                       "ratio after / before the FFN", across_lines)],
        anchors=[Anchor("Dong, Cordonnier, Loukas 2021", "pure attention collapses within a few layers; skip "
                        "connections prevent it; the MLP only slows it",
                        f"trained MiniLM, last layer: attention+FFN / pure attention = 10^{est[0].mean:.2f}; "
                        f"attention+skip / full = {est[2].mean:.3g}")],
        caveats=["post-LN blocks (MiniLM): the LayerNorms stay in every variant, as in Dong et al.'s BERT surgery"]
                + _caveats(smol),
        config={"minilm": _meta(trained), "smollm2": _meta(smol), "measure": sizes, "floor": floor},
    )
