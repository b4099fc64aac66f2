"""Calls made side by side in worker processes: each starts only after the calls it comes after, a failure
skips only what depends on it, and C8's sweeps made ahead are the sweeps the experiment would make alone."""

import json
import time
from pathlib import Path

import pytest
import torch

from ffnlab.experiments import side_by_side
from ffnlab.experiments.c8_memorisation import CAPACITY, MODELS, capacity_models, sweep, sweep_calls, task_for
from ffnlab.experiments.common import few_threads
from ffnlab.experiments.registry import Context
from ffnlab.experiments.side_by_side import Call, ahead


def context(root: Path) -> Context:
    return Context(mode="quick", seeds=(0,), results=root, progress=False, options={"size": "test"})


def log(ctx: Context, name: str, seconds: float = 0.0, fail: bool = False) -> None:
    """A call that records when it started and finished (under the results dir) and may fail."""
    start = time.time()
    time.sleep(seconds)
    if fail:
        raise RuntimeError(f"{name} failed")
    ctx.results.mkdir(parents=True, exist_ok=True)
    (ctx.results / f"{name}.json").write_text(json.dumps([start, time.time(), torch.get_num_threads()]))


def logged(root: Path) -> dict[str, list[float]]:
    return {p.stem: json.loads(p.read_text()) for p in root.glob("*.json")}


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(side_by_side, "default_threads", lambda: 2)


def test_a_call_starts_after_the_calls_it_comes_after_and_each_worker_has_one_thread(tmp_path, two_cores):
    calls = [Call(log, ("a", 0.3)), Call(log, ("b", 0.1)), Call(log, ("c",), after=(0, 1)), Call(log, ("d",))]
    ahead(context(tmp_path), calls, "test")
    at = logged(tmp_path)
    assert sorted(at) == ["a", "b", "c", "d"]
    assert at["c"][0] >= max(at["a"][1], at["b"][1])
    assert at["d"][0] < at["c"][0]  # d may start before c: it waits for nothing, c for a
    assert {threads for _, _, threads in at.values()} == {1}


def test_a_failed_call_skips_what_comes_after_it_and_nothing_else(tmp_path, two_cores):
    calls = [Call(log, ("a", 0.0, True)), Call(log, ("b",), after=(0,)), Call(log, ("c",), after=(1,)),
             Call(log, ("d",))]
    ahead(context(tmp_path), calls, "test")  # does not raise: the experiment makes the failed call itself
    assert sorted(logged(tmp_path)) == ["d"]


def test_nothing_runs_on_one_core_and_a_call_may_not_wait_for_a_later_one(tmp_path, monkeypatch):
    monkeypatch.setattr(side_by_side, "default_threads", lambda: 1)
    ahead(context(tmp_path), [Call(log, ("a",)), Call(log, ("b",))], "test")
    assert logged(tmp_path) == {}
    with pytest.raises(ValueError, match="earlier calls only"):
        ahead(context(tmp_path), [Call(log, ("a",), after=(1,)), Call(log, ("b",))], "test")


def test_sweeps_made_ahead_are_the_sweeps_the_experiment_makes_alone(tmp_path, two_cores):
    cap = CAPACITY["test"]
    cfgs = capacity_models(cap, task_for(cap, max(cap.grid)).vocab_size)
    jobs = [(0, MODELS[0]), (0, MODELS[2])]
    made, alone = context(tmp_path / "ahead"), context(tmp_path / "alone")
    calls = sweep_calls(cap, cfgs, jobs)
    assert [c.fn.__name__ for c in calls] == ["fit_facts"] * len(cap.grid) + ["sweep"] + \
        ["fit_facts"] * len(cap.grid) + ["sweep"]
    ahead(made, calls, "test")
    trained = sorted((tmp_path / "ahead" / "runs").iterdir())
    assert len(trained) >= 2 * len(cap.grid)
    with few_threads(1):  # the workers' thread count: the same arithmetic, bit for bit
        for seed, k in jobs:
            reused = sweep(made, cap, cfgs[k], k, seed)
            assert reused == sweep(alone, cap, cfgs[k], k, seed)
    assert sorted((tmp_path / "ahead" / "runs").iterdir()) == trained  # the experiment trained nothing itself
    assert [q.name for q in made.trained] == [q.name for q in alone.trained]
