"""The published answer: a study's stored results and their report, copied where they can be read
without running anything (e.g. `docs/study/` of the repository).

    from ffnlab.report.publish import publish
    publish("results", "docs/study", mode="full")

`DIR/index.html` is rendered from the copies in `DIR/results/` (so it can be re-rendered from them
with `ffnlab report --results DIR/results`), and `DIR/PROVENANCE.md` says which code produced which
results, with which command, on which machine, how much compute they took and which experiments
of a mode are still missing. The learning-rate sweeps are copied too, so that a study continued
from the copies (`ffnlab study --full --results COPY`) reuses every finished experiment whose code
is unchanged and trains no sweep twice. The directory is written atomically, and an existing `DIR`
is replaced only if it is an earlier publication.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from ffnlab.errors import FFNLabError
from ffnlab.experiments.registry import MODES, load_all
from ffnlab.report.load import load_study, record_path
from ffnlab.report.page import render_page
from ffnlab.results import atomic_dir, atomic_write_text, code_version, results_dir

PROVENANCE = "PROVENANCE.md"


def publish(results: str | Path | None, out: str | Path, mode: str | None = None) -> Path:
    """Copy the stored results of `mode` (default: each experiment's fullest) and render them in `out`."""
    out = Path(out)
    if out.exists() and not (out / PROVENANCE).is_file():
        raise FFNLabError(f"{out} exists and is not an earlier publication (no {PROVENANCE}); "
                          "give a new directory or remove it")
    root = results_dir(results)
    study = load_study(root, mode)
    with atomic_dir(out) as tmp:
        copied = tmp / "results"
        for r in study.results:
            src = root / "experiments" / f"{r.name}-{r.mode}.json"
            (copied / "experiments").mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copied / "experiments" / src.name)
        modes = sorted({r.mode for r in study.results} | {f.mode for f in study.failures})
        records = {}
        for m in modes:
            if (src := record_path(root, m)).is_file():
                (copied / "study").mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, copied / "study" / src.name)
                records[m] = json.loads(src.read_text())
        sweeps = sorted((root / "lr-sweeps").glob("*.json"))
        if sweeps:
            (copied / "lr-sweeps").mkdir(parents=True)
            for src in sweeps:
                shutil.copy2(src, copied / "lr-sweeps" / src.name)
        final = load_study(copied, mode)
        final.root = out / "results"  # the page names where its results will be, not the temporary copy
        atomic_write_text(tmp / "index.html", render_page(final))
        atomic_write_text(tmp / PROVENANCE, provenance(final, records, mode, list(load_all())))
    for p in [out, *out.rglob("*")]:  # a publication is for reading: ordinary permissions
        p.chmod(0o755 if p.is_dir() else 0o644)
    return out


def provenance(study, records: dict[str, dict], mode: str | None, registered: list[str] | None = None) -> str:
    """Which code produced the published results, with which command, where, what is missing of each
    mode (of the `registered` experiments), and how to redo or continue it."""
    registered = registered or []
    versions = sorted({r.code_version or "unrecorded" for r in study.results})
    lines = ["# Provenance of this published study", "",
             f"Published {datetime.now(timezone.utc).isoformat(timespec='seconds')} by ffnlab {code_version()} "
             f"from {len(study.results)} stored results ({mode or 'each experiment at its fullest mode'}).", "",
             "Code that produced the results (git commit after the `+`): " + ", ".join(f"`{v}`" for v in versions),
             ""]
    for m, rec in sorted(records.items()):
        env = rec.get("environment", {})
        here = [r for r in study.results if r.mode == m]
        elsewhere = {r.name for r in study.results if r.mode != m and MODES.index(r.mode) > MODES.index(m)}
        missing = [n for n in registered if n not in {r.name for r in here} | elsewhere]  # nor in a fuller mode
        lines += [f"## The {m} study", "",
                  f"- command: `{rec.get('command', '?')}`, last started {rec.get('started', '?')}",
                  f"- compute: {len(here)} experiments here, {sum(r.wall_seconds for r in here):,.0f} s of their own "
                  "wall time in all (each experiment's last run; a run that found its models trained in the "
                  "store counts only what it computed itself, so this is a lower bound on the study's cost)",
                  f"- code: `{rec.get('code_version', '?')}`",
                  "- machine: " + ", ".join(f"{k} {v}" for k, v in env.items() if isinstance(v, (str, int, float)))]
        if missing:
            lines.append(f"- not yet run in this mode (nor in a fuller one): {', '.join(missing)}")
        failed = [n for n, s in rec.get("experiments", {}).items() if s.get("status") == "failed"]
        if failed:
            lines.append(f"- failed in that run: {', '.join(failed)}")
        lines.append("")
    lines += ["## Reproduce", "",
              "Check out the commit above, then `make study` (quick) or `.venv/bin/ffnlab study --full`; "
              "`ffnlab report --results docs/study/results` re-renders this page from the copies here "
              "without recomputing anything.", "",
              "To continue a study that is not finished: `cp -r docs/study/results R && .venv/bin/ffnlab study --full "
              "--results R`, then `.venv/bin/ffnlab report --results R --publish docs/study`. Finished experiments "
              "whose code is unchanged are reused; the rest run.", ""]
    stale = [r.name for r in study.results if r.code_version.endswith(".dirty")]
    if stale:
        lines += [f"Note: {', '.join(stale)} came from code with uncommitted changes.", ""]
    return "\n".join(lines)
