"""Training an experiment's runs ahead, several processes at a time: the runs `fit` then reuses are
the ones it would have trained itself (same weights), sweeps included."""

from pathlib import Path

import pytest
import torch

from ffnlab.experiments import common
from ffnlab.experiments.common import base_model, data, fit, train_ahead, train_config
from ffnlab.experiments.registry import Context


def context(root: Path) -> Context:
    return Context(mode="quick", seeds=(0,), results=root, progress=False, options={"size": "test"})


def jobs(ctx, task):
    base = base_model(ctx, task.vocab_size)
    return [(base, train_config(ctx, 0), "gelu"), (base.with_ffn(kind="none"), train_config(ctx, 0), "none")]


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(common, "default_threads", lambda: 2)


def test_runs_trained_ahead_in_worker_processes_are_the_runs_fit_would_train(tmp_path, two_cores):
    ahead, alone = context(tmp_path / "ahead"), context(tmp_path / "alone")
    task = data(ahead)
    train_ahead(ahead, task, jobs(ahead, task))
    sweeps = sorted(p.name for p in (tmp_path / "ahead" / "lr-sweeps").iterdir())
    assert [s.split("-")[0] for s in sweeps] == ["mlp", "none"]  # both families swept ahead

    torch.set_num_threads(1)  # the workers' thread count: the same arithmetic, bit for bit
    for cfg, tcfg, name in jobs(ahead, task):
        reused = fit(ahead, cfg, tcfg, task, name)
        trained = fit(alone, cfg, tcfg, task, name)
        assert reused.run.reused and not trained.run.reused
        assert reused.run.out_dir != trained.run.out_dir
        for (k, a), b in zip(reused.model.state_dict().items(), trained.model.state_dict().values()):
            assert torch.equal(a, b), k


def test_nothing_is_trained_ahead_on_one_core(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "default_threads", lambda: 1)
    ctx = context(tmp_path)
    task = data(ctx)
    train_ahead(ctx, task, jobs(ctx, task))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lr-sweeps").exists()
