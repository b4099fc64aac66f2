"""`ffnlab runs`: list the runs in the store, or compare a few side by side."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ffnlab.errors import FFNLabError
from ffnlab.results import results_dir

NAME = "runs"
HELP = "list recorded runs (training, experiments, analyses) or compare some (--compare ID ID ...)"

SUMMARY_KEYS = ("val_loss", "val_ppl", "best_ngram_val", "ngram_gap", "steps", "tokens_per_second", "params")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", help="only runs of this kind (train, experiment, ...)")
    p.add_argument("--name", help="only runs whose name matches this pattern (SQL LIKE: %% is any text)")
    p.add_argument("--status", help="running, finished or failed")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs, newest first (default 50)")
    p.add_argument("--compare", type=int, nargs="+", metavar="ID", help="show these runs' differing settings and results")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--results", help="results directory holding the store (default: $FFNLAB_RESULTS or ./results)")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def table(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [columns] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def run(args: argparse.Namespace) -> int:
    from ffnlab.store import Store

    store = Store(results_dir(args.results), readonly=True)
    if args.compare:
        return compare(store, args.compare, args.json)
    if args.limit < 1:
        raise FFNLabError(f"--limit must be a positive integer, got {args.limit}")
    runs = store.runs(kind=args.kind, name=args.name, status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps([r.__dict__ for r in runs], indent=1, default=str))
        return 0
    if not runs:
        print("no runs match")
        return 0
    rows = [[r.id, r.kind, r.name, r.status, r.seed, r.summary.get("val_loss"), r.summary.get("ngram_gap"),
             r.summary.get("steps"), r.summary.get("tokens_per_second"), r.wall_seconds,
             time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)), r.code_version] for r in runs]
    print(table(["id", "kind", "name", "status", "seed", "val_loss", "gap_to_ngram", "steps", "tok/s", "wall_s",
                 "started", "code"], rows))
    print("gap_to_ngram: the best n-gram baseline's validation loss minus the run's (positive: the model is better)")
    return 0


def compare(store: Any, ids: list[int], as_json: bool) -> int:
    runs = [store.run(i) for i in ids]
    configs = [flatten(r.config) for r in runs]
    keys = sorted(set().union(*configs))
    differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    results = sorted(set().union(*(r.summary for r in runs)) & set(SUMMARY_KEYS)) or []
    if as_json:
        print(json.dumps({"runs": ids, "differs": {k: [c.get(k) for c in configs] for k in differing},
                          "results": {k: [r.summary.get(k) for r in runs] for k in results}}, indent=1, default=str))
        return 0
    header = ["", *(f"run {r.id} ({r.name or r.kind})" for r in runs)]
    rows = [[k, *(c.get(k) for c in configs)] for k in differing]
    rows += [[k, *(r.summary.get(k) for r in runs)] for k in results]
    rows += [["status", *(r.status for r in runs)], ["code", *(r.code_version for r in runs)]]
    if not differing:
        print("the runs have identical configs")
    print(table(header, rows))
    return 0
