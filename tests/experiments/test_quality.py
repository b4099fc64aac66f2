"""Models worth measuring: the bar, the labels it puts on verdicts, LR choice on validation, and
results that are recomputed when the code that made them changed."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from ffnlab.errors import FFNLabError
from ffnlab.experiments import registry
from ffnlab.experiments.quality import PLATEAU, Quality, choose_lr, improvement
from ffnlab.experiments.registry import Context, Experiment, Findings, apply_labels, reusable, run_experiment
from ffnlab.results import INCONCLUSIVE, Result


def quality(test_loss=1.5, best=2.0, bar=0.2, imp=0.001, plateau=True, exempt="", comparison=False):
    return Quality("m", 1, "mlp", 1e-3, 100, test_loss, 1000, best, "trigram", bar, imp, plateau, exempt,
                   comparison=comparison)


@pytest.mark.parametrize("q, meets", [
    (quality(), True),                                         # 0.5 below the best n-gram, at a plateau
    (quality(test_loss=1.85), False),                          # 0.15 below: short of a 0.2 bar
    (quality(imp=0.05), False),                                # still falling 5% over the last 20% of steps
    (quality(imp=0.05, plateau=False), True),                  # quick: no plateau asked
    (quality(test_loss=2.5, exempt="a control"), True),        # an exempt control never blocks a verdict
    (quality(imp=None), False),                                # plateau asked but not measurable
    # a comparison model (e.g. no FFN) has bar 0: it must beat the best n-gram at all, and plateau
    (quality(test_loss=1.95, bar=0.0, comparison=True), True),
    (quality(test_loss=2.0, bar=0.0, comparison=True), False),
    (quality(test_loss=2.1, bar=0.0, comparison=True), False),
    (quality(test_loss=1.95, bar=0.0, imp=0.05, comparison=True), False),
])
def test_the_bar_can_be_met_and_missed(q, meets):
    assert q.meets is meets
    assert (q.shortfall() == "") is meets


def test_a_comparison_models_shortfall_names_its_own_rule():
    why = quality(test_loss=2.1, bar=0.0, comparison=True).shortfall()
    assert "needs to beat it (a comparison model)" in why and "-0.100" in why


def test_improvement_is_measured_over_the_last_fifth_of_the_steps():
    hist = [{"step": s, "val_loss": v} for s, v in [(20, 3.0), (80, 2.0), (90, 1.995), (100, 1.99)]]
    assert improvement(hist, 100) == pytest.approx((2.0 - 1.99) / 2.0)
    assert improvement(hist, 100) < PLATEAU
    assert improvement(hist[:1], 100) is None


def _ctx(seeds, trained):
    return Context(mode="quick", seeds=tuple(seeds), results=Path("."), trained=list(trained))


def _result(verdict="supported"):
    return Result(name="x", claim="C3", title="", version=1, mode="quick", method="", verdict=verdict,
                  reason="the gap clears 0.02")


EXP = Experiment("x", "C3", 1, "", lambda ctx: None, {"quick": 1, "full": 3})


@pytest.mark.parametrize("seeds, trained, expected", [
    ((0, 1, 2), [quality()], "supported"),
    ((0,), [quality()], "indicative: supported"),
    ((0, 1), [], "indicative: supported"),
    ((0, 1, 2), [quality(), quality(test_loss=1.9)], INCONCLUSIVE),
    ((0,), [quality(test_loss=1.9)], INCONCLUSIVE),
])
def test_labels_on_verdicts(seeds, trained, expected):
    r = _result()
    apply_labels(r, _ctx(seeds, trained), EXP)
    assert r.verdict == expected
    assert len(r.training) == len(trained)
    if expected == INCONCLUSIVE:
        assert r.extra["verdict_if_trained"]["verdict"].endswith("supported")
        assert "1.900" in r.reason and "ffnlab run x --full" in r.reason


def test_a_deterministic_measurement_is_not_labelled_indicative():
    r = _result()
    apply_labels(r, _ctx((0,), []), Experiment("x", "C5", 1, "", lambda c: None, {}, seeded=False))
    assert r.verdict == "supported"


def test_learning_rate_is_chosen_on_validation_and_cached(tmp_path):
    losses = {1e-3: 3.0, 3e-3: 2.5, 1e-2: float("nan")}
    calls = []

    def train_at(lr):
        calls.append(lr)
        if lr == 3e-2:
            raise FFNLabError("training diverged")
        return SimpleNamespace(val_loss=losses.get(lr, 9.0))

    path = tmp_path / "sweep.json"
    record = choose_lr(path, (1e-3, 3e-3, 1e-2, 3e-2), train_at, {"family": "mlp"})
    assert record["chosen"] == 3e-3 and "diverged" in record["failed"][repr(3e-2)] and record["family"] == "mlp"
    assert choose_lr(path, (1e-3, 3e-3, 1e-2, 3e-2), train_at) == json.loads(path.read_text())
    assert len(calls) == 4  # the second call read the cache
    with pytest.raises(FFNLabError, match="every learning rate"):
        choose_lr(tmp_path / "none.json", (1e-2,), train_at)


@pytest.mark.parametrize("best, tried, chosen, at_edge", [
    (0.02, [0.004, 0.008, 0.016, 0.032], 0.016, False),  # the top edge won: one rate past it loses, 0.016 stands
    (0.5, [0.004, 0.008, 0.016, 0.032, 0.064], 0.064, True),  # still at the edge after two more: recorded as such
    (0.0025, [0.001, 0.002, 0.004, 0.008, 0.016], 0.002, False),  # the bottom edge: grown downwards
    (0.008, [0.004, 0.008, 0.016], 0.008, False),  # a rate inside the grid: nothing more is trained
])
def test_a_winner_at_the_edge_of_the_grid_grows_the_grid(tmp_path, best, tried, chosen, at_edge):
    calls = []

    def train_at(lr):  # validation loss lowest at `best`
        calls.append(lr)
        return SimpleNamespace(val_loss=abs(math.log(lr / best)))

    record = choose_lr(tmp_path / "s.json", (0.004, 0.008, 0.016), train_at)
    assert sorted(calls) == tried and record["lrs"] == tried
    assert record["chosen"] == chosen and record["at_edge"] == at_edge


def test_a_result_from_other_code_is_recomputed_unless_reuse_stale(tmp_path, monkeypatch):
    calls = []

    def fake(ctx):
        calls.append(1)
        return Findings(method="m", verdict="supported", reason=f"run {len(calls)}")

    monkeypatch.setitem(registry.EXPERIMENTS, "fake-exp",
                        Experiment("fake-exp", "C9", 1, "a fake", fake, {"quick": 1, "full": 3}))
    monkeypatch.setattr(registry, "load_all", lambda: dict(registry.EXPERIMENTS))
    first = run_experiment("fake-exp", results=tmp_path, progress=False)
    assert run_experiment("fake-exp", results=tmp_path, progress=False).reason == first.reason
    assert len(calls) == 1  # same code: reused
    # the stored result was made by other code: change its fingerprint on disk
    path = tmp_path / "experiments" / "fake-exp-quick.json"
    stored = json.loads(path.read_text())
    stored["code_fingerprint"] = "0123456789abcdef"
    path.write_text(json.dumps(stored))
    old = Result.load(path)
    assert not reusable(old, registry.EXPERIMENTS["fake-exp"], 1, None, {})
    kept = run_experiment("fake-exp", results=tmp_path, progress=False, reuse_stale=True)
    assert kept.code_fingerprint == "0123456789abcdef" and len(calls) == 1
    again = run_experiment("fake-exp", results=tmp_path, progress=False)
    assert len(calls) == 2 and again.code_fingerprint == registry.EXPERIMENTS["fake-exp"].fingerprint()



def test_a_training_run_from_other_training_code_is_not_reused(tmp_path, monkeypatch):
    from ffnlab.experiments import common
    from ffnlab.store import Store

    ctx = Context(mode="quick", seeds=(0,), results=tmp_path, progress=False, options={"size": "test"})
    task = common.data(ctx)
    cfg = common.base_model(ctx, task.vocab_size)
    train_cfg = common.train_config(ctx, 0, steps=3, eval_every=3, checkpoint_every=3)
    first = common.fit(ctx, cfg, train_cfg, task, "m", sweep=False)
    common.fit(ctx, cfg, train_cfg, task, "m", sweep=False)
    assert len(Store(tmp_path).runs(kind="train")) == 1  # same code: reused
    from ffnlab.train import trainer

    real = trainer.code_fingerprint
    monkeypatch.setattr(trainer, "code_fingerprint", lambda *m: "edited" + real(*m))
    again = common.fit(ctx, cfg, train_cfg, task, "m", sweep=False)
    assert len(Store(tmp_path).runs(kind="train")) == 2  # the trainer changed: trained anew
    assert again.quality.test_loss == first.quality.test_loss  # same code path, same numbers
    assert [q.name for q in ctx.trained] == ["m"] * 3


def test_a_reference_model_short_of_its_bar_is_flagged_but_does_not_withhold_the_verdict():
    reference = Quality("ref", 2, "none", 1e-3, 100, 2.5, 1000, 2.0, "trigram", 0.2, 0.001, False,
                        in_verdict=False)
    r = _result()
    apply_labels(r, _ctx((0, 1, 2), [quality(), reference]), EXP)
    assert r.verdict == "supported"
    assert [q["meets"] for q in r.training] == [True, False]
    apply_labels(r, _ctx((0, 1, 2), [quality(test_loss=1.9), reference]), EXP)
    assert r.verdict == INCONCLUSIVE and "1 of the 1 trained models the criterion uses" in r.reason


def test_the_registry_builds_the_result_and_refuses_anything_else(tmp_path, monkeypatch):
    def finds(ctx):
        return Findings(method="m", verdict="supported", reason="r", extra={"k": 1})

    def placeholder(ctx):  # the old way: a Result with fields left for the registry to fill in
        return Result(name="", claim="", title="", version=0, mode=ctx.mode, method="m")

    for name, fn in (("fake-finds", finds), ("fake-placeholder", placeholder)):
        monkeypatch.setitem(registry.EXPERIMENTS, name, Experiment(name, "C9", 2, "a fake", fn, {"quick": 1}))
    monkeypatch.setattr(registry, "load_all", lambda: dict(registry.EXPERIMENTS))
    r = run_experiment("fake-finds", results=tmp_path, progress=False)
    assert (r.name, r.claim, r.title, r.version, r.mode, r.seeds) == ("fake-finds", "C9", "a fake", 2, "quick", [0])
    assert r.extra["k"] == 1 and r.command == "ffnlab run fake-finds --quick" and r.code_fingerprint
    assert Result.load(tmp_path / "experiments" / "fake-finds-quick.json").verdict == r.verdict
    with pytest.raises(TypeError, match="experiments return Findings"):
        run_experiment("fake-placeholder", results=tmp_path, progress=False)


def test_an_inconclusive_verdict_from_one_seed_is_not_also_labelled_indicative():
    def fake(ctx):
        return Findings(method="m", verdict=INCONCLUSIVE, reason="no model solved the task")

    r = Result(name="x", claim="C8", title="", version=1, mode="quick", method="", verdict=INCONCLUSIVE)
    apply_labels(r, Context("quick", (0,), Path(".")), Experiment("x", "C8", 1, "", fake, {"quick": 1}))
    assert r.verdict == INCONCLUSIVE


def test_a_sweep_where_every_rate_diverged_is_not_grown(tmp_path):
    calls = []

    def train_at(lr):
        calls.append(lr)
        raise FFNLabError("diverged")

    with pytest.raises(FFNLabError, match="every learning rate"):
        choose_lr(tmp_path / "s.json", (0.004, 0.008, 0.016), train_at)
    assert sorted(calls) == [0.004, 0.008, 0.016]  # no rate past either edge was tried
