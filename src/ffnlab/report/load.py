"""Reading a stored study: the results under `<results>/experiments/` and the study records.

`ffnlab study` keeps one record per mode in `<results>/study/<mode>.json`: when it ran, the
environment, and every experiment's status (a failure is one stored line). The report reads
only these files; it never runs or recomputes anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffnlab.errors import FFNLabError, unknown
from ffnlab.results import Result, results_dir

MODES = ("quick", "full")


@dataclass(frozen=True)
class Failure:
    """An experiment that did not produce a result in the latest study run (or a broken file)."""

    name: str
    claim: str
    mode: str
    error: str  # one line


@dataclass
class StoredStudy:
    root: Path
    results: list[Result]
    failures: list[Failure]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode -> study record

    def by_claim(self) -> dict[str, list[Result]]:
        grouped: dict[str, list[Result]] = {}
        for r in self.results:
            grouped.setdefault(r.claim, []).append(r)
        return grouped


def record_path(root: Path, mode: str) -> Path:
    """Where `ffnlab study --<mode>` keeps its record."""
    return root / "study" / f"{mode}.json"


def load_study(results: str | Path | None = None, mode: str | None = None) -> StoredStudy:
    """Stored results of one mode, or (mode None) of each experiment's fullest mode on disk."""
    if mode is not None and mode not in MODES:
        raise unknown("mode", mode, MODES)
    root = results_dir(results)
    modes = [mode] if mode else list(MODES)
    found: dict[str, Result] = {}
    failures: list[Failure] = []
    for path in sorted((root / "experiments").glob("*.json")):
        stem, _, file_mode = path.stem.rpartition("-")
        if file_mode not in modes:
            continue
        try:
            result = Result.load(path)
        except (OSError, ValueError, TypeError, KeyError, AssertionError) as err:
            failures.append(Failure(stem, "?", file_mode, f"unreadable result file {path.name}: {_line(err)}"))
            continue
        # full beats quick when both are stored and no mode was asked for
        if stem not in found or MODES.index(file_mode) > MODES.index(found[stem].mode):
            found[stem] = result
    records = {m: json.loads(p.read_text()) for m in modes if (p := record_path(root, m)).exists()}
    for m, record in records.items():
        for name, status in record.get("experiments", {}).items():
            newer = found.get(name)
            if newer is not None and newer.mode == m and newer.started >= status.get("at", ""):
                continue  # re-run successfully since (e.g. with `ffnlab run`)
            if status.get("status") == "failed":
                failures.append(Failure(name, status.get("claim", "?"), m, status.get("error", "failed")))
    if not found and not failures:
        where = root / "experiments"
        asked = f" for mode {mode!r}" if mode else ""
        raise FFNLabError(f"no stored results{asked} in {where}; run `ffnlab study --quick` "
                          f"(or `ffnlab run NAME`) first, or pass --results DIR")
    ordered = sorted(found.values(), key=lambda r: (_claim_key(r.claim), r.name))
    return StoredStudy(root, ordered, failures, records)


def _claim_key(claim_id: str) -> tuple[int, str]:
    digits = claim_id[1:] if claim_id[:1] == "C" else ""
    return (int(digits), "") if digits.isdigit() else (10**6, claim_id)


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
