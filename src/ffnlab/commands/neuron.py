"""`ffnlab neuron MODEL LAYER INDEX`: one neuron's trigger contexts and the tokens its value promotes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ffnlab.commands._options import add_device_option
from ffnlab.errors import FFNLabError
from ffnlab.results import results_dir

NAME = "neuron"
HELP = "one FFN neuron: its top trigger contexts (from `ffnlab memories`) and its value's top tokens"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the model given to `ffnlab memories`")
    p.add_argument("layer", type=int)
    p.add_argument("index", type=int, help="neuron index in the layer's FFN")
    p.add_argument("--stats", help="statistics directory (default: the newest results/neurons/MODEL-*)")
    p.add_argument("-n", type=int, default=10, help="trigger contexts to show (default 10)")
    p.add_argument("--results", help="results directory (default: $FFNLAB_RESULTS or ./results)")
    add_device_option(p)


def find_stats(root: Path, name: str) -> Path:
    found = sorted((root / "neurons").glob(f"{name}-*/meta.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FFNLabError(f"no neuron statistics for {name!r} under {root / 'neurons'}; "
                          f"run `ffnlab memories {name}` first or pass --stats")
    return found[-1].parent


def run(args: argparse.Namespace) -> int:
    import torch

    from ffnlab.analysis.memories import value_logits, value_tokens
    from ffnlab.analysis.neurons import NeuronStats
    from ffnlab.experiments.c7_memories import mark
    from ffnlab.open import open_model
    from ffnlab.store import Store

    if args.n < 1:
        raise FFNLabError(f"-n must be a positive integer, got {args.n}")
    opened = open_model(args.model, progress=False, device=args.device)
    n_layers = opened.model.n_layers
    if not 0 <= args.layer < n_layers:
        raise FFNLabError(f"layer {args.layer} out of range; {opened.name} has layers 0..{n_layers - 1}")
    width = opened.model.ffn_values(args.layer).shape[0]
    if not 0 <= args.index < width:
        raise FFNLabError(f"neuron {args.index} out of range; layer {args.layer} has neurons 0..{width - 1}")
    root = results_dir(args.results)
    stats = NeuronStats.load(args.stats or find_stats(root, opened.name))
    layer = stats.layers[args.layer]
    style = "ansi" if sys.stdout.isatty() else "brackets"
    mean, std = float(layer.mean[args.index]), float(layer.var[args.index]) ** 0.5
    print(f"{opened.name} layer {args.layer} neuron {args.index}: mean {mean:.4f}, std {std:.4f}, "
          f"active (> {stats.cfg.threshold}) {100 * float(layer.sparsity[args.index]):.2f}% of "
          f"{stats.count:,} tokens")
    print("top trigger contexts (activation, context):")
    for v, i in zip(layer.top_values[args.index, : args.n].tolist(), layer.top_index[args.index, : args.n].tolist()):
        print(f"  {v:+8.3f}  {mark(opened, stats, int(i), style=style)}")
    vt = value_tokens(value_logits(opened.model, args.layer, [args.index]), k=10)
    sign = torch.sign(layer.top_values[args.index, :1])
    print("value promotes (when it fires as above):", " | ".join(repr(opened.decode([t]))
                                                                  for t in vt.promoted(sign)[0].tolist()))
    print("value suppresses:", " | ".join(repr(opened.decode([t])) for t in vt.promoted(-sign)[0].tolist()))
    store = Store(root)
    run_id = store.start_run("neuron", {"model": opened.name, "layer": args.layer, "index": args.index},
                             name=opened.name)
    store.finish_run(run_id, {"mean": mean, "std": std})
    return 0
