"""The SQLite run store: runs, metrics, artifacts, lookups, and two processes writing at once."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from ffnlab.errors import FFNLabError
from ffnlab.store import Store, config_hash

N_RUNS, N_STEPS = 5, 40


def _writer(root: str, tag: str) -> None:
    store = Store(root)
    for r in range(N_RUNS):
        run = store.start_run("train", {"tag": tag, "r": r}, name=f"{tag}-{r}", seed=r)
        for step in range(N_STEPS):  # one transaction per call: many chances to collide
            store.log_metrics(run, step, {"loss": step + r / 10, "lr": 1e-3})
        store.add_artifact(run, "checkpoint", f"/tmp/{tag}/{r}")
        store.finish_run(run, {"val_loss": float(r)})


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    Store(tmp_path)  # create the schema once, as a real study does
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), tag)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    store = Store(tmp_path)
    runs = store.runs()
    assert len(runs) == 2 * N_RUNS and {r.status for r in runs} == {"finished"}
    for run in runs:
        series = store.metrics(run.id)
        assert [s for s, _ in series["loss"]] == list(range(N_STEPS))
        assert series["loss"][-1][1] == pytest.approx(N_STEPS - 1 + run.seed / 10)
        assert store.artifacts(run.id)["checkpoint"].name == str(run.seed)


def test_run_lifecycle_and_lookup_by_config_hash(tmp_path):
    store = Store(tmp_path)
    config = {"model": {"d": 64}, "train": {"steps": 10}}
    assert config_hash(config) == config_hash({"train": {"steps": 10}, "model": {"d": 64}})
    first = store.start_run("train", config, name="x", seed=1)
    assert store.find_finished("train", config_hash(config)) is None
    store.fail_run(first, "diverged")
    assert store.run(first).status == "failed" and store.run(first).error == "diverged"
    second = store.start_run("train", config, name="x", seed=1)
    store.finish_run(second, {"val_loss": 2.5})
    found = store.find_finished("train", config_hash(config))
    assert found.id == second and found.summary == {"val_loss": 2.5} and found.wall_seconds >= 0
    assert store.find_finished("experiment", config_hash(config)) is None
    store.start_run("experiment", {"claim": "C3"}, name="glu-variants")
    assert [r.kind for r in store.runs()] == ["experiment", "train", "train"]
    assert [r.id for r in store.runs(kind="train", status="failed")] == [first]
    assert [r.name for r in store.runs(name="glu%")] == ["glu-variants"]
    assert found.code_version  # recorded with every run


def test_bad_queries_are_user_errors(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(FFNLabError, match="no run with id 99"):
        store.run(99)
    with pytest.raises(FFNLabError, match="unknown run status 'done'"):
        store.runs(status="done")
