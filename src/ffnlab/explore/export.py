"""A static export of the explorer: the overview, every layer and a chosen set of neurons as plain HTML
files (with the stylesheet and script beside them) that open from disk, without a server or a network.

The export is written into a temporary directory beside `out` and renamed into place, so an interrupted
export leaves the previous one (or nothing); a directory that is not an earlier export is never replaced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ffnlab.errors import FFNLabError
from ffnlab.explore import pages
from ffnlab.explore.app import STATIC
from ffnlab.explore.explorer import Explorer
from ffnlab.results import atomic_dir, atomic_write_text, code_version

MARK = "explore.json"  # what makes a directory an explorer export


def export_static(ex: Explorer, out: str | Path, neurons: list[tuple[int, int]] = (), per_layer: int = 5,
                  progress: bool = True) -> Path:
    """Write the export to `out`; neurons: `neurons` and each layer's `per_layer` strongest (by top |activation|)."""
    from tqdm import tqdm

    ex.need_stats()
    out = Path(out)
    if out.exists() and not (out.is_dir() and ((out / MARK).is_file() or not any(out.iterdir()))):
        raise FFNLabError(f"{str(out)!r} exists and is not an explorer export; choose a new or empty directory")
    for layer, neuron in neurons:
        ex.check_neuron(layer, neuron)
    picks = sorted(set(neurons) | set(ex.export_picks(per_layer)))
    links = pages.Links(served=False, exported=frozenset(picks))
    with atomic_dir(out) as tmp:
        shutil.copytree(STATIC, tmp / "static")
        bar = tqdm(total=1 + ex.n_layers + len(picks), unit="page", desc="export", disable=not progress)
        atomic_write_text(tmp / "index.html", pages.overview(ex, links))
        bar.update()
        for layer in range(ex.n_layers):
            atomic_write_text(tmp / links.layer(layer), pages.layer(ex, links, layer))
            bar.update()
        for layer, neuron in picks:
            atomic_write_text(tmp / links.neuron(layer, neuron), pages.neuron(ex, links, layer, neuron))
            bar.update()
        bar.close()
        atomic_write_text(tmp / MARK, json.dumps({"model": ex.name, "stats": str(ex.stats_dir),
                                                 "tokens": ex.stats.count, "neurons": picks,
                                                 "code_version": code_version()}, indent=1))
    return out
