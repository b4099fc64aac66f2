"""The study: run every registered experiment, keep going past failures, then render the report.

    from ffnlab.study import run_study
    outcome = run_study("quick")        # results/experiments/*.json, results/report/index.html

Experiments whose stored result is still valid (same version, seeds, data and code) are reused,
and so are finished training runs, so an interrupted study picks up where it stopped. A failing experiment is recorded as one line in
`<results>/study/<mode>.json` (traceback in `<results>/study/logs/`) and the others still run.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import pkgutil
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ffnlab.device import resolve_device
from ffnlab.errors import FFNLabError, unknown
from ffnlab import numbers as fmt
from ffnlab.report.answer import headline
from ffnlab.report.load import record_path
from ffnlab.results import Result, atomic_write_text, code_version, results_dir


@dataclass(frozen=True)
class Outcome:
    """What happened to one experiment in this study run."""

    name: str
    claim: str
    status: str  # ran | reused | failed
    seconds: float
    result: Result | None = None
    error: str = ""


@dataclass
class StudyRun:
    mode: str
    outcomes: list[Outcome] = field(default_factory=list)
    wall_seconds: float = 0.0
    report: Path | None = None

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def _import_experiments() -> list[Outcome]:
    """Import every experiment module; one that fails to import is a failure, not the end of the study.

    The failed module is replaced by an empty one in `sys.modules`, so that the registry's own
    `load_all()` (called by `run_experiment`) does not retry and raise for every other experiment.
    """
    import ffnlab.experiments as pkg

    failures = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name in ("registry", "verdict"):
            continue
        qualified = f"{pkg.__name__}.{info.name}"
        try:
            importlib.import_module(qualified)
        except Exception as err:  # noqa: BLE001 (any import error of someone's module must not stop the study)
            sys.modules[qualified] = types.ModuleType(qualified)
            failures.append(Outcome(f"module:{info.name}", "?", "failed", 0.0, error=_one_line(err)))
    return failures


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def environment() -> dict[str, str]:
    """Versions that decide whether numbers reproduce."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu cores": str(os.cpu_count())}
    for pkg in ("torch", "transformers", "tokenizers", "numpy", "matplotlib"):
        try:
            env[pkg] = importlib.import_module(pkg).__version__
        except ImportError:
            env[pkg] = "not installed"
    try:
        import torch

        env["torch threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    return env


def run_study(mode: str = "quick", results: str | Path | None = None, data: str | None = None,
              only: list[str] | None = None, progress: bool = True, render: bool = True,
              log: Any = print, options: dict[str, Any] | None = None, reuse_stale: bool = False,
              device: str = "auto", models: list[str] | None = None) -> StudyRun:
    """Run (or reuse) every registered experiment of `mode`, record each outcome, render the report.

    `options` go to every experiment (e.g. ``{"size": "test"}`` for the tiny models of the tests);
    `device` is where their models train and run ("auto": cuda, else mps, else cpu). `models` (pretrained
    names, checkpoint dirs, GGUF files or cached ids) join the pretrained experiments that take them.
    """
    from ffnlab.experiments.registry import MODES, load_all, run_experiment

    if mode not in MODES:
        raise unknown("mode", mode, MODES)
    resolve_device(device)  # a device that is not here fails once, not once per experiment
    added = _added_models(models or [])  # an unsupported model fails here, before any experiment runs
    root = results_dir(results)
    t0 = time.perf_counter()
    import_failures = _import_experiments()
    experiments = load_all()
    if only:
        for name in only:
            if name not in experiments:
                raise unknown("experiment", name, experiments)
        experiments = {n: e for n, e in experiments.items() if n in only}
        import_failures = []
    if not experiments and not import_failures:
        raise FFNLabError("no experiments are registered (src/ffnlab/experiments/*.py)")
    run = StudyRun(mode, outcomes=list(import_failures))
    record = _load_record(root, mode)
    record.update(mode=mode, started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  code_version=code_version(), environment=environment(),
                  command=f"ffnlab study --{mode}" + (f" --data {data}" if data else "")
                  + "".join(f" --model {m}" for m in models or []))
    for o in import_failures:
        _store(root, record, o, data)
    for i, (name, exp) in enumerate(experiments.items(), 1):
        log(f"[{i}/{len(experiments)}] {name} ({exp.claim}): {exp.title}")
        path = exp.result_path(root, mode)
        before = path.stat().st_mtime_ns if path.exists() else None
        t = time.perf_counter()
        try:
            opts = {**(options or {}), "models": added} if added and name in _takes_models() else options
            result = run_experiment(name, mode, results=root, data=data, progress=progress, options=opts,
                                    reuse_stale=reuse_stale, device=device)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 (one experiment's failure must not lose the others)
            outcome = Outcome(name, exp.claim, "failed", time.perf_counter() - t, error=_one_line(err))
            logs = root / "study" / "logs" / f"{name}-{mode}.txt"
            atomic_write_text(logs, traceback.format_exc())
            log(f"    failed: {outcome.error} (traceback: {logs})")
        else:
            reused = before is not None and path.stat().st_mtime_ns == before
            outcome = Outcome(name, exp.claim, "reused" if reused else "ran", time.perf_counter() - t, result)
            log(f"    {outcome.status}: {result.verdict or 'no verdict'} in {outcome.seconds:.1f}s")
        run.outcomes.append(outcome)
        _store(root, record, outcome, data)
    run.wall_seconds = time.perf_counter() - t0
    record["wall_seconds"] = round(run.wall_seconds, 1)
    atomic_write_text(record_path(root, mode), json.dumps(record, indent=1))
    if render:
        from ffnlab.report import render_report

        run.report = render_report(root, mode)
    return run


def _takes_models() -> tuple[str, ...]:
    from ffnlab.experiments.pretrained import TAKES_MODELS

    return TAKES_MODELS


def _added_models(models: list[str]) -> list[dict[str, str]]:
    """Each `--model` checked (architecture supported, config readable; no weights read) and stamped."""
    from ffnlab.pretrained import open_meta
    from ffnlab.pretrained.sources import source_stamp

    for source in models:
        open_meta(source)
    return [{"model": str(source), "stamp": source_stamp(source)} for source in models]


def _load_record(root: Path, mode: str) -> dict[str, Any]:
    path = record_path(root, mode)
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}  # a damaged record only loses the previous run's failure lines


def _store(root: Path, record: dict[str, Any], o: Outcome, data: str | None) -> None:
    """Save the record after every experiment, so an interrupted study keeps what it learned."""
    entry: dict[str, Any] = {"claim": o.claim, "status": o.status, "seconds": round(o.seconds, 2),
                             "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": data}
    if o.error:
        entry["error"] = o.error
    if o.result is not None:
        entry["verdict"] = o.result.verdict
    record.setdefault("experiments", {})[o.name] = entry
    atomic_write_text(record_path(root, record["mode"]), json.dumps(record, indent=1))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def summary_table(run: StudyRun) -> str:
    """The verdict table printed at the end of a study (plain text)."""
    rows = [("claim", "experiment", "status", "verdict", "time (s)", "headline number (or error)")]
    for o in sorted(run.outcomes, key=lambda o: (o.claim, o.name)):
        est = headline(o.result) if o.result else None
        if est:
            number = f"{fmt.estimate(est)}: {est.quantity}"
        else:
            number = o.error or (o.result.reason if o.result else "")
        verdict = (o.result.verdict or "no verdict") if o.result else "—"
        rows.append((o.claim, o.name, o.status, verdict, f"{o.seconds:.1f}", _clip(number, 100)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
