"""`ffnlab params [MODEL]`: parameter and FLOP accounting per component (claim C5).

MODEL is any loadable pretrained model (packaged name, checkpoint directory, GGUF file, cached
model id); it is built on the meta device from its config, so no weights are read. Without it,
an ffnlab preset is counted.
"""

from __future__ import annotations

import argparse
import json

from ffnlab.analysis.accounting import account, build_meta, crossover_length, flops_per_token
from ffnlab.errors import FFNLabError
from ffnlab.model import FFNConfig, preset

NAME = "params"
HELP = "parameters and FLOPs per component (embeddings, attention, FFN, norms, head)"
SEQ_LENS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a pretrained model: packaged name, checkpoint dir, .gguf file or cached org/name "
                        "(default: count --preset)")
    p.add_argument("--preset", default="small", help="model preset (tiny, small, bert-base, gpt2-small)")
    p.add_argument("--ffn", nargs="*", default=[], metavar="KIND",
                   help="FFN kinds to compare (default: the preset's own)")
    p.add_argument("--seq-lens", type=int, nargs="*", default=list(SEQ_LENS), metavar="T")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def report(preset_name: str, kind: str | None, seq_lens: list[int]) -> dict:
    """Accounting of one preset with its FFN replaced by `kind` (None: the preset's)."""
    cfg = preset(preset_name)
    if kind is not None:
        cfg = cfg.replace(ffn=FFNConfig(kind=kind, activation=cfg.ffn.activation, d_ff=cfg.ffn.d_ff,
                                        ratio=cfg.ffn.ratio))
    return {"preset": preset_name, "ffn": cfg.ffn.kind, **accounting(build_meta(cfg), seq_lens)}


def model_report(source: str, seq_lens: list[int]) -> dict:
    """Accounting of a pretrained model, built on the meta device (no weights read)."""
    from ffnlab.pretrained import open_meta

    row, model = open_meta(source)
    return {"model": row["name"], "source": row["source"], "architecture": row["architecture"],
            "family": row["family"], "hf_class": row["hf_class"], "ffn": "gated" if model.family.gated else "mlp",
            **accounting(model, seq_lens)}


def accounting(model, seq_lens: list[int]) -> dict:
    """Parameters per component, FLOPs per token at each length, and where attention overtakes the FFN."""
    acc = account(model)
    return {
        "total": acc.total, "non_embedding": acc.non_embedding,
        "components": [dict(zip(("component", "params", "pct_total", "pct_non_embedding"), r)) for r in acc.rows()],
        "flops_per_token": [{"seq_len": t, **flops_per_token(model, t)} for t in seq_lens],
        "crossover_attention_total": crossover_length(model),
        "crossover_attention_scores": crossover_length(model, include_projections=False),
    }


def _fmt_pct(x: float | None) -> str:
    return "" if x is None else f"{x:.1f}%"


def print_report(r: dict) -> None:
    title = f"{r['model']} ({r['architecture']})" if "model" in r else r["preset"]
    print(f"{title} with ffn={r['ffn']}: {r['total']:,} parameters ({r['non_embedding']:,} non-embedding)")
    print(f"  {'component':<12}{'params':>14}{'% all':>9}{'% non-emb':>11}")
    for c in r["components"]:
        print(f"  {c['component']:<12}{c['params']:>14,}{_fmt_pct(c['pct_total']):>9}"
              f"{_fmt_pct(c['pct_non_embedding']):>11}")
    print(f"  forward FLOPs per token (M)   {'T':>6}{'attn proj':>11}{'attn scores':>13}{'ffn':>9}{'ffn share':>11}")
    for f in r["flops_per_token"]:
        attn = f["attention_proj"] + f["attention_scores"]
        share = f["ffn"] / (attn + f["ffn"]) if attn + f["ffn"] else 0.0
        print(f"  {'':<30}{f['seq_len']:>6}{f['attention_proj'] / 1e6:>11.2f}{f['attention_scores'] / 1e6:>13.2f}"
              f"{f['ffn'] / 1e6:>9.2f}{100 * share:>10.1f}%")
    print(f"  attention (projections + scores) overtakes the FFN at T = {r['crossover_attention_total']}; "
          f"attention scores alone at T = {r['crossover_attention_scores']}")


def run(args: argparse.Namespace) -> int:
    bad = [t for t in args.seq_lens if t < 1]
    if bad:
        raise FFNLabError(f"--seq-lens must be positive token counts, got {bad[0]}")
    if args.model is not None:
        if args.ffn:
            raise FFNLabError("--ffn replaces the FFN of a preset; a pretrained MODEL is counted as it is")
        reports = [model_report(args.model, args.seq_lens)]
    else:
        reports = [report(args.preset, kind, args.seq_lens) for kind in args.ffn or [None]]
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=1))
    else:
        for r in reports:
            print_report(r)
    return 0
