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


@pytest.mark.parametrize("plateau_bar, retried", [(1e-4, True), (1.0, False)])
def test_a_comparison_model_still_falling_is_trained_once_longer_and_the_reference_never(
        tmp_path, monkeypatch, plateau_bar, retried):
    from ffnlab.experiments import quality
    from ffnlab.experiments.common import fit_variants

    monkeypatch.setitem(common.SIZES, "test", common.dataclasses.replace(common.SIZES["test"], plateau=True,
                                                                         retry=1.5))
    monkeypatch.setattr(quality, "PLATEAU", plateau_bar)  # 1.0: every run counts as plateaued
    ctx = context(tmp_path)
    task = data(ctx)
    base = base_model(ctx, task.vocab_size)
    steps = common.SIZES["test"].steps
    losses = fit_variants(ctx, task, {"gelu": base, "none": base.with_ffn(kind="none")}, "t",
                          reference=lambda name: name == "gelu")
    by_name = {q.name: q for q in ctx.trained}
    ref, other = by_name["t gelu s0"], by_name["t none s0"]
    assert ref.improvement >= plateau_bar or not retried  # still falling too, and not retried: the reference
    assert (ref.steps, ref.first_steps) == (steps, None)
    assert (other.steps, other.first_steps) == ((round(1.5 * steps), steps) if retried else (steps, None))
    assert losses["none"] == [other.test_loss]
    if retried and not other.plateaued:  # a second miss names both lengths
        assert f"of {round(1.5 * steps)} steps, as at {steps} steps before" in other.shortfall()
