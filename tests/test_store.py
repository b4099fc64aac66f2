"""The SQLite run store: runs, metrics, artifacts, lookups, and two processes writing at once."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import subprocess
import sys

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


def test_a_run_whose_process_was_killed_reads_as_failed(tmp_path):
    """Issue 16.5: a run killed (-9) before it could record its end stayed 'running' for good."""
    script = ("import os, signal, sys; from ffnlab.store import Store; "
              "Store(sys.argv[1]).start_run('train', {'a': 1}); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=120)
    assert proc.returncode == -9
    store = Store(tmp_path, readonly=True)
    (dead,) = store.runs()
    assert dead.status == "failed" and "ended without finishing the run" in dead.error
    assert store.runs(status="running") == [] or all(r.status == "failed" for r in store.runs(status="running"))
    writer = Store(tmp_path)
    alive = writer.start_run("train", {"a": 2})  # a new run records what readers already saw
    with sqlite3.connect(writer.path) as conn:
        stored = dict(conn.execute("SELECT id, status FROM runs").fetchall())
    assert stored == {dead.id: "failed", alive: "running"}
    assert writer.run(alive).status == "running"  # this process is alive


def test_reading_the_store_writes_nothing(tmp_path, monkeypatch):
    """Issue 16.4: `ffnlab runs` on a read-only results directory must not need write access."""
    with pytest.raises(FFNLabError, match="no run store in"):
        Store(tmp_path / "none", readonly=True)
    assert not (tmp_path / "none").exists()
    Store(tmp_path).finish_run(Store(tmp_path).start_run("train", {"a": 1}), {"val_loss": 1.0})
    before = (tmp_path / "ffnlab.db").read_bytes()
    real = sqlite3.connect

    def no_shm(database, *args, **kwargs):  # what a read-only directory does to a WAL database opened mode=ro
        conn = real(database, *args, **kwargs)
        if "mode=ro" in str(database):
            conn.close()
            conn = real(":memory:")
            conn.set_authorizer(lambda *a: sqlite3.SQLITE_DENY)  # every statement fails
        return conn
    monkeypatch.setattr(sqlite3, "connect", no_shm)
    (run,) = Store(tmp_path, readonly=True).runs()
    assert run.status == "finished" and run.summary == {"val_loss": 1.0}
    monkeypatch.undo()
    assert (tmp_path / "ffnlab.db").read_bytes() == before
    with pytest.raises(FFNLabError, match="readonly"):
        Store(tmp_path, readonly=True).start_run("train", {"a": 2})
