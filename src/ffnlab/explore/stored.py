"""What the explorer reads from disk, read-only: neuron statistics, and results other commands stored.

    find_stats        the newest `ffnlab memories` statistics of a model (or the directory given)
    check_stats       refuse statistics that were made by another model (a stale or foreign set)
    stored_agreement  key-value agreement per layer, from the `memories` run that wrote the statistics
    stored_ladder     the replacement-ladder results of a model, when `ffnlab ladder` has stored them
    stored_ablations  knowledge-neuron suppression effects stored by the c7-knowledge-neurons experiment

Each reader returns None (or an empty list) when nothing is stored; the pages then say what to run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ffnlab.analysis.neurons import NeuronStats
from ffnlab.errors import FFNLabError
from ffnlab.results import Result


def find_stats(root: Path, name: str, given: str | Path | None = None) -> Path | None:
    """`given`, else the newest `root/neurons/NAME-*` holding statistics; None when there are none."""
    if given is not None:
        found = NeuronStats.saved(given)
        if found is None:
            raise FFNLabError(f"{str(given)!r} holds no neuron statistics (no meta.json); "
                              f"run `ffnlab memories {name}` first or pass another --stats")
        return found
    dirs = sorted((root / "neurons").glob(f"{name}-*/meta.json"), key=lambda p: p.stat().st_mtime)
    return dirs[-1].parent if dirs else None


def check_stats(stats: NeuronStats, where: Path, name: str, widths: list[int], vocab_size: int) -> None:
    """The statistics were made by this model: same name, layers, widths and a vocabulary they fit in."""
    meta = json.loads((where / "meta.json").read_text())
    made_by = meta.get("model")
    if made_by is not None and made_by != name:
        raise FFNLabError(f"the statistics in {str(where)!r} were made by {made_by!r}, not {name!r}; "
                          f"run `ffnlab memories {name}` or pass its --stats")
    got = [layer.n_neurons for layer in stats.layers]
    if got != widths:
        raise FFNLabError(f"the statistics in {str(where)!r} have {len(got)} layers of widths {sorted(set(got))}, "
                          f"{name} has {len(widths)} of {sorted(set(widths))}; run `ffnlab memories {name}` again")
    if len(stats.tokens) and int(stats.tokens.max()) >= vocab_size:
        raise FFNLabError(f"the statistics in {str(where)!r} hold token ids beyond {name}'s vocabulary "
                          f"({vocab_size}); they were made with another tokenizer")


def stored_agreement(root: Path, stats_dir: Path) -> list[float] | None:
    """Per layer, the key-value agreement the `memories` run that wrote `stats_dir` recorded."""
    from ffnlab.store import Store

    if not (root / "ffnlab.db").is_file():
        return None
    store = Store(root, readonly=True)
    target = stats_dir.resolve()
    for run in store.runs(kind="memories", status="finished"):
        if store.artifacts(run.id).get("neurons") == target:
            agree = run.summary.get("agree_by_layer")
            return [float(a) for a in agree] if isinstance(agree, list) else None
    return None


@dataclass(frozen=True)
class Ladder:
    """Replacement-ladder results: per layer, the fraction of loss each rung recovers,
    (L_zero - L_rung) / (L_zero - L_orig), from the `ffnlab ladder` run that stored them."""

    rungs: list[str]
    by_layer: dict[int, dict[str, float]]
    source: Path


def ladder_path(root: Path) -> Path:
    """Where `ffnlab ladder NAME` keeps its runs (one directory each)."""
    return root / "ladder"


def stored_ladder(root: Path, name: str) -> Ladder | None:
    """The newest finished `ffnlab ladder` run of model `name` in the run store (its summary.json)."""
    from ffnlab.store import Store

    if not (root / "ffnlab.db").is_file():
        return None
    store = Store(root, readonly=True)
    for run in store.runs(kind="ladder", status="finished"):  # newest first; a deleted directory is skipped
        if run.name != name:
            continue
        out = store.artifacts(run.id).get("ladder")
        path = Path(out) / "summary.json" if out else None
        if path is None or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
            rungs = [r for r in data["rungs"] if r not in ("zero", "drop-attn")]  # zero is the scale's 0
            by_layer = {int(row["layer"]): {r: float(v["recovered"]) for r, v in row["rungs"].items()
                                            if r in rungs and v.get("recovered") is not None}
                        for row in data["layers"]}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FFNLabError(f"damaged ladder results in {str(path)!r}: {type(err).__name__}: {err}") from None
        return Ladder(rungs, by_layer, path)
    return None


@dataclass(frozen=True)
class StoredAblation:
    """A fact for whose answer integrated gradients over its paraphrases picked this neuron (with others),
    and what switching that group off did to p(answer) (relative change), against matched random neurons
    and on unrelated facts."""

    fact: str
    group: list[tuple[int, int]]
    p: float
    suppress: float
    random_suppress: float
    unrelated: float
    source: str


def stored_ablations(root: Path, name: str) -> list[StoredAblation]:
    """Every stored c7-knowledge-neurons result of model `name` (quick or full), one row per attributed fact."""
    out = []
    for path in sorted((root / "experiments").glob("c7-knowledge-neurons-*.json")):
        try:
            result = Result.load(path)
        except (OSError, ValueError, TypeError, KeyError):
            continue  # an unreadable result is the report's to flag; here it is simply not shown
        if result.config.get("model") != name:
            continue
        for i, rec in enumerate(result.extra.get("facts", [])):
            if not isinstance(rec, dict) or not rec.get("neurons"):
                continue
            group = [(int(layer), int(n)) for layer, n in rec["neurons"]]
            out.append(StoredAblation(str(rec.get("fact", f"fact {i}")), group, float(rec["p"]), float(rec["own"]),
                                      float(rec["random"]), float(rec["unrelated"]), path.name))
    return out
