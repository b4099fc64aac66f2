"""Run the benchmarks: `python -m bench [--full] [NAME ...]`; tables to stdout, JSON to results/bench/."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path
from typing import Any

from ffnlab.results import atomic_write_text, code_version, results_dir

HERE = Path(__file__).parent


def discover() -> dict[str, str]:
    """bench name (module name without `bench_`) -> module name."""
    return {info.name.removeprefix("bench_"): f"bench.{info.name}" for info in pkgutil.iter_modules([str(HERE)])
            if info.name.startswith("bench_")}


def print_tables(name: str, result: dict[str, Any]) -> None:
    """Print the `tables` a bench returns ({title, columns, rows}); other benches as indented JSON."""
    tables = result.get("tables")
    if not tables:
        print(json.dumps(result, indent=1, default=str))
        return
    for t in tables:
        rows = [[f"{v:,.3g}" if isinstance(v, float) else str(v) for v in row] for row in t["rows"]]
        widths = [max(len(str(c)), *(len(r[i]) for r in rows)) for i, c in enumerate(t["columns"])]
        print(f"\n{name}: {t['title']}")
        print("  ".join(str(c).ljust(w) for c, w in zip(t["columns"], widths)))
        print("  ".join("-" * w for w in widths))
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    for note in result.get("notes", []):
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    found = discover()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(sorted(found))})")
    parser.add_argument("--full", action="store_true", help="longer, less noisy measurements")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(found))
    if unknown:
        print(f"python -m bench: error: unknown benchmark {unknown[0]!r}; known: {', '.join(sorted(found))}",
              file=sys.stderr)
        return 2
    out_dir = results_dir() / "bench"
    for name in args.names or sorted(found):
        t0 = time.perf_counter()
        result = importlib.import_module(found[name]).run(quick=not args.full)
        record = {"bench": name, "mode": "full" if args.full else "quick", "code_version": code_version(),
                  "seconds": time.perf_counter() - t0, "result": result}
        atomic_write_text(out_dir / f"{name}.json", json.dumps(record, indent=1, default=str))
        print_tables(name, result)
        print(f"  ({record['seconds']:.0f} s; written to {out_dir / f'{name}.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
