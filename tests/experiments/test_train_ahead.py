"""Training an experiment's runs ahead, several processes at a time: the runs `fit` then reuses are
the ones it would have trained itself (same weights), sweeps included."""

import dataclasses
from pathlib import Path

import pytest
import torch

from ffnlab.experiments import common, quality
from ffnlab.experiments.common import base_model, data, fit, fit_variants, train_ahead, train_config
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


@pytest.mark.parametrize("plateau_bar, retried", [(1e-4, True), (1.0, False)])
def test_a_comparison_model_still_falling_is_trained_once_longer_and_the_reference_never(
        tmp_path, two_cores, monkeypatch, plateau_bar, retried):
    monkeypatch.setitem(common.SIZES, "test", dataclasses.replace(common.SIZES["test"], plateau=True, retry=1.5))
    monkeypatch.setattr(quality, "PLATEAU", plateau_bar)  # 1.0: every run counts as plateaued
    ctx = context(tmp_path)
    task = data(ctx)
    base = base_model(ctx, task.vocab_size)
    steps = common.SIZES["test"].steps
    reused = {}
    cfgs = {"gelu": base, "none": base.with_ffn(kind="none"), "linear": base.with_ffn(kind="linear")}
    losses = fit_variants(ctx, task, cfgs, "t", reference=lambda name: name == "gelu", retry=True,
                          each=lambda seed, name, fitted: reused.update({name: fitted.run.reused}))
    by_name = {q.name: q for q in ctx.trained}
    ref = by_name["t gelu s0"]
    assert (ref.steps, ref.first_steps) == (steps, None)  # the reference is never retried ...
    assert reused == {"gelu": True, "none": True, "linear": True}  # the longer runs too were trained ahead
    for name in ("none", "linear"):
        other = by_name[f"t {name} s0"]
        assert (other.steps, other.first_steps) == ((round(1.5 * steps), steps) if retried else (steps, None))
        assert losses[name] == [other.test_loss]
        if retried:
            assert not other.plateaued
            assert f"of {round(1.5 * steps)} steps, as at {steps} steps before" in other.shortfall()
    if retried:
        assert ref.improvement >= plateau_bar  # ... though it was still falling too


def test_an_experiment_that_does_not_ask_retries_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(common.SIZES, "test", dataclasses.replace(common.SIZES["test"], plateau=True, retry=1.5))
    monkeypatch.setattr(quality, "PLATEAU", 1e-4)
    ctx = context(tmp_path)
    task = data(ctx)
    base = base_model(ctx, task.vocab_size)
    fit_variants(ctx, task, {"gelu": base, "none": base.with_ffn(kind="none")}, "t",
                 reference=lambda name: name == "gelu")
    assert all(q.first_steps is None and q.steps == common.SIZES["test"].steps for q in ctx.trained)
