"""The experiment registry: every claim test and study analysis, by name, with a version.

    @experiment("rank-collapse", claim="C2", version=1, title="...")
    def rank_collapse(ctx: Context) -> Findings: ...

`run_experiment` reuses a stored result of the same name, mode, version, seeds, data and
options that was produced by the same code (the fingerprint of the experiment's module and
everything it imports); a result from other code is recomputed unless `reuse_stale`.
Bump `version` when what the experiment measures changes.

After the experiment returns, two labels are applied here, so no experiment can forget them:
a verdict that rests on a trained language model which missed its bar becomes
"inconclusive (under-trained)" (`quality.Quality`), and a verdict from fewer than 3 seeds is
marked "indicative: ...".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ffnlab.device import resolve_device
from ffnlab.errors import FFNLabError, unknown
from ffnlab.fingerprint import code_fingerprint
from ffnlab.results import (INCONCLUSIVE, INDICATIVE, MIN_SEEDS, Anchor, Criterion, Deviation, Estimate, Result,
                            Series, Table, code_version, results_dir)

MODES = ("quick", "full")


@dataclass(frozen=True)
class Context:
    """What an experiment gets: the mode, seeds, where results and caches live, and options."""

    mode: str
    seeds: tuple[int, ...]
    results: Path
    data: str | None = None  # corpus path; None = the default corpus
    progress: bool = True
    options: dict = field(default_factory=dict)
    trained: list = field(default_factory=list)  # quality.Quality of every model trained (or reused) for it
    device: str = "auto"  # where models train and run (not part of a result's identity)

    @property
    def quick(self) -> bool:
        return self.mode == "quick"


@dataclass(frozen=True)
class Findings:
    """What an experiment found, as it returns it; `run_experiment` builds the stored `Result` from it and
    the experiment's registration (name, claim, version, seeds, deviations, code, provenance), so that no
    experiment fills in -- or forgets -- what the registry knows. `title` overrides the registered one
    (e.g. to name a model); `command` the default `ffnlab run NAME` line."""

    method: str
    criterion: Criterion | None = None
    verdict: str | None = None
    reason: str = ""
    estimates: list[Estimate] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # free-form (e.g. neuron examples, the layered answer's statements)
    config: dict = field(default_factory=dict)  # what ran (models, schedules) beside the numbers
    title: str = ""
    command: str = ""


@dataclass(frozen=True)
class Experiment:
    name: str
    claim: str
    version: int
    title: str
    fn: Callable[[Context], Findings]
    default_seeds: dict[str, int]  # mode -> number of seeds
    order: int = 100  # position in the study
    seeded: bool = True  # False: a deterministic measurement, where seeds do not apply
    deviations: tuple[Deviation, ...] = ()  # criteria changed after results were seen (results.Deviation)

    def result_path(self, results: Path, mode: str) -> Path:
        return results / "experiments" / f"{self.name}-{mode}.json"

    def fingerprint(self) -> str:
        """The code that produces this experiment's result."""
        return code_fingerprint(self.fn.__module__)


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, claim: str, version: int, title: str, seeds: dict[str, int] | None = None,
               order: int = 100, seeded: bool = True, deviations: tuple[Deviation, ...] = ()
               ) -> Callable[[Callable[[Context], Findings]], Callable[[Context], Findings]]:
    def add(fn: Callable[[Context], Findings]) -> Callable[[Context], Findings]:
        EXPERIMENTS[name] = Experiment(name, claim, version, title, fn, seeds or {"quick": 1, "full": 3}, order,
                                       seeded, deviations)
        return fn
    return add


def load_all() -> dict[str, Experiment]:
    """Import every experiment module so that the registry is complete."""
    import importlib
    import pkgutil

    import ffnlab.experiments as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("registry", "verdict"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    return dict(sorted(EXPERIMENTS.items(), key=lambda kv: (kv[1].order, kv[0])))


def get(name: str) -> Experiment:
    experiments = load_all()
    if name not in experiments:
        raise unknown("experiment", name, experiments)
    return experiments[name]


def stored(name: str, mode: str, results: str | Path | None = None) -> Result | None:
    """The stored result of an experiment, if there is one."""
    path = get(name).result_path(results_dir(results), mode)
    return Result.load(path) if path.exists() else None


def reusable(old: Result, exp: Experiment, n_seeds: int, data: str | None, options: dict | None,
             stale_ok: bool = False) -> bool:
    """Whether a stored result answers this request: same version, seeds, data, options, and code
    (or `stale_ok`: other code, kept deliberately)."""
    same = (old.version == exp.version and len(old.seeds) == n_seeds and old.config.get("data") == data
            and old.config.get("options", {}) == dict(options or {}))
    return same and (stale_ok or old.code_fingerprint == exp.fingerprint())


def apply_labels(result: Result, ctx: Context, exp: Experiment) -> None:
    """Fewer than 3 seeds make a verdict indicative; an under-trained model makes it inconclusive
    (the verdict the numbers would give is kept in `extra["verdict_if_trained"]`)."""
    result.training = [q.to_dict() for q in ctx.trained]
    if not result.verdict:
        return
    if exp.seeded and len(ctx.seeds) < MIN_SEEDS and result.verdict != INCONCLUSIVE:  # no verdict to label
        n = len(ctx.seeds)
        result.verdict = INDICATIVE + result.verdict
        result.reason += f" (indicative: {n} seed{'s' if n != 1 else ''}; a verdict needs >= {MIN_SEEDS} paired seeds)"
    missed = [q for q in ctx.trained if q.in_verdict and not q.meets]
    if missed:
        as_if = result.extra["verdict_if_trained"] = {"verdict": result.verdict, "reason": result.reason}
        names = "; ".join(q.shortfall() for q in missed[:3]) + (f"; and {len(missed) - 3} more" if len(missed) > 3
                                                                  else "")
        decide = (f"`ffnlab run {exp.name} --full` (longer training) would decide it" if ctx.mode == "quick"
                  else "a longer training budget (steps in ffnlab.experiments.common.SIZES['full']) would decide it")
        result.verdict = INCONCLUSIVE
        used = sum(q.in_verdict for q in ctx.trained)
        result.reason = (f"{len(missed)} of the {used} trained models the criterion uses miss their bar, so the "
                         f"numbers carry no verdict: {names}. {decide}. Read as if trained: "
                         f"{as_if['verdict']}, because {as_if['reason']}")


def run_experiment(name: str, mode: str = "quick", seeds: int | None = None, results: str | Path | None = None,
                   data: str | None = None, reuse: bool = True, progress: bool = True,
                   options: dict | None = None, reuse_stale: bool = False, device: str = "auto") -> Result:
    """Run one experiment (or reuse its stored result) and save its `Result`.

    `reuse_stale` keeps a stored result produced by other code (the report marks it)."""
    if mode not in MODES:
        raise unknown("mode", mode, MODES)
    exp = get(name)
    n_seeds = seeds if seeds is not None else exp.default_seeds.get(mode, 1)
    if n_seeds < 1:
        raise FFNLabError(f"--seeds must be at least 1, got {n_seeds}")
    root = results_dir(results)
    path = exp.result_path(root, mode)
    if reuse and path.exists():
        old = Result.load(path)
        if reusable(old, exp, n_seeds, data, options, stale_ok=reuse_stale):
            return old
    ctx = Context(mode=mode, seeds=tuple(range(n_seeds)), results=root, data=data, progress=progress,
                  options=dict(options or {}), device=device)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    found = exp.fn(ctx)
    if not isinstance(found, Findings):
        raise TypeError(f"experiment {name} returned {type(found).__name__}; experiments return Findings")
    seeds_flag = f" --seeds {n_seeds}" if seeds is not None else ""
    data_flag = f" --data {data}" if data else ""
    result = Result(
        name=exp.name, claim=exp.claim, title=found.title or exp.title, version=exp.version, mode=mode,
        method=found.method, criterion=found.criterion, verdict=found.verdict, reason=found.reason,
        estimates=list(found.estimates), tables=list(found.tables), series=list(found.series),
        anchors=list(found.anchors), caveats=list(found.caveats), deviations=list(exp.deviations),
        extra=dict(found.extra), command=found.command or f"ffnlab run {name} --{mode}{seeds_flag}{data_flag}",
        config={**found.config, "data": data, "options": dict(ctx.options),
                "device": resolve_device(device).type},  # provenance only: not part of the reuse key
        seeds=list(ctx.seeds), code_version=code_version(), code_fingerprint=exp.fingerprint(), started=started)
    apply_labels(result, ctx, exp)
    result.wall_seconds = time.perf_counter() - t0
    result.save(path)
    _record(root, result, path)
    return result


def _record(root: Path, result: Result, path: Path) -> None:
    """Log the experiment run and its key numbers in the run store (`ffnlab runs` lists them)."""
    from ffnlab.store import Store

    store = Store(root)
    config = {"name": result.name, "mode": result.mode, "version": result.version, "seeds": result.seeds,
              "data": result.config.get("data"), "options": result.config.get("options", {})}
    run_id = store.start_run("experiment", config, name=result.name)
    store.add_artifact(run_id, "result", path)
    store.finish_run(run_id, {"verdict": result.verdict, "wall_seconds": result.wall_seconds,
                              "code_version": result.code_version,
                              "estimates": {e.quantity: e.mean for e in result.estimates}})
