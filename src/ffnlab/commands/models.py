"""`ffnlab models`: the pretrained models that can be loaded here, and their sizes."""

from __future__ import annotations

import argparse
import json

from ffnlab.errors import FFNLabError

NAME = "models"
HELP = "list the pretrained models that load here (packaged ones and --path checkpoints/GGUF files)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", action="append", default=[], metavar="DIR_OR_GGUF",
                        help="also describe this checkpoint directory or .gguf file (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--families", action="store_true",
                        help="list the architecture families that load (HF model types, block form, GGUF names)")


def families() -> list[dict]:
    from ffnlab.pretrained import FAMILIES

    return [{"family": f.name, "model_types": list(f.model_types), "block": f.block,
             "ffn": "gated" if f.gated else "mlp", "causal": f.causal, "gguf": list(f.gguf)} for f in FAMILIES.values()]


def run(args: argparse.Namespace) -> int:
    from ffnlab.pretrained import available, describe

    if args.families:
        rows = families()
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        for r in rows:
            print(f"{r['family']:<11} {r['block']:<11} {r['ffn']:<6} {'decoder' if r['causal'] else 'encoder':<8} "
                  f"model types: {', '.join(r['model_types'])}" + (f"; GGUF: {', '.join(r['gguf'])}" if r["gguf"] else ""))
        return 0

    rows = available() + [describe(p) for p in args.path]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    header = ("name", "architecture", "layers", "d", "FFN", "params", "weights")
    table = [header]
    for r in rows:
        if "error" in r:
            table.append((r["name"], "-", "-", "-", "-", "-", f"not available: {r['error']}"))
        else:
            table.append((r["name"], r["architecture"], str(r["layers"]), str(r["d_model"]), str(r["d_ff"]),
                          f"{r['params']:,}", r["weights"]))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    if args.path and not rows:
        raise FFNLabError("nothing to list")
    return 0
