"""The trainer: exact resume, determinism, learning real text, reuse, masked LM, divergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffnlab.data import prepare_data
from ffnlab.errors import FFNLabError
from ffnlab.model import FFNConfig, ModelConfig
from ffnlab.store import Store
from ffnlab.train import TrainConfig, evaluate, load_model, lr_at, train, train_or_reuse


def tiny(vocab: int, **changes) -> ModelConfig:
    cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=2, max_seq_len=32, dropout=0.1,
                      ffn=FFNConfig(kind="moe", n_experts=4, top_k=2, ratio=2.0))  # dropout + aux loss: the hard case
    return cfg.replace(**changes)


CFG = TrainConfig(steps=12, batch_size=4, seq_len=32, lr=3e-3, warmup=3, eval_every=4, eval_batches=2,
                  checkpoint_every=5, grad_accum=2, seed=7, precision="fp32")  # bf16 only pays off at larger sizes


class Crash(Exception):
    pass


class CrashAt:
    """Real data that raises (like a killed process) when the trainer asks for batch `at`."""

    def __init__(self, data, at: int):
        self.data, self.at = data, at
        self.vocab_size, self.fingerprint = data.vocab_size, data.fingerprint

    def batch(self, split, index, *args):
        if split == "train" and index == self.at:
            raise Crash
        return self.data.batch(split, index, *args)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted(char_data, tmp_path_factory):
    return train(tiny(char_data.vocab_size), CFG, char_data, tmp_path_factory.mktemp("a"), progress=False)


def test_resumed_run_ends_bit_identical_to_uninterrupted(char_data, uninterrupted, tmp_path):
    with pytest.raises(Crash):  # dies in step 8 (batches 14, 15), after the step-5 checkpoint
        train(tiny(char_data.vocab_size), CFG, CrashAt(char_data, 15), tmp_path, progress=False)
    resumed = train(tiny(char_data.vocab_size), CFG, char_data, tmp_path, progress=False)
    a, b = weights(uninterrupted.model), weights(resumed.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == [{**h, "seconds": r["seconds"]} for h, r in zip(uninterrupted.history, resumed.history)]
    assert resumed.val_loss == uninterrupted.val_loss


def test_two_runs_with_one_seed_are_identical(char_data, uninterrupted, tmp_path):
    again = train(tiny(char_data.vocab_size), CFG, char_data, tmp_path, progress=False)
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in uninterrupted.history]
    assert [h["val_loss"] for h in again.history] == [h["val_loss"] for h in uninterrupted.history]
    other = train(tiny(char_data.vocab_size), CFG.replace(seed=8), char_data, tmp_path / "s8", progress=False)
    assert other.history[-1]["train_loss"] != again.history[-1]["train_loss"]


def test_checkpoint_loads_back_to_the_same_model(char_data, uninterrupted):
    model = load_model(uninterrupted.out_dir)
    a, b = weights(model), weights(uninterrupted.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    loss = evaluate(model, char_data, "val", CFG.eval_batches, CFG.batch_size, CFG.seq_len, CFG.seed)
    assert loss == uninterrupted.val_loss


def test_a_few_hundred_steps_learn_well_below_the_unigram_entropy(tmp_path):
    data = prepare_data(None, "char", cache_dir=tmp_path)  # the default corpus, all 42 plays
    counts = np.bincount(np.asarray(data.train), minlength=data.vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * np.log(p)).sum())  # nats per token if each token ignored its context
    cfg = TrainConfig(steps=300, batch_size=16, seq_len=64, lr=4e-3, warmup=20, eval_every=300, eval_batches=8,
                      checkpoint_every=300, precision="fp32")
    model_cfg = ModelConfig(vocab_size=data.vocab_size, d_model=64, n_layers=2, n_heads=4, max_seq_len=64)
    result = train(model_cfg, cfg, data, tmp_path / "run", progress=False)
    assert 2.5 < unigram < 3.6
    assert result.val_loss < unigram - 0.6, (result.val_loss, unigram)


def test_train_or_reuse_loads_a_finished_run(char_data, tmp_path):
    store = Store(tmp_path / "results")
    cfg = CFG.replace(steps=4, checkpoint_every=4)
    first = train_or_reuse(tiny(char_data.vocab_size), cfg, char_data, tmp_path / "run", store, progress=False)
    second = train_or_reuse(tiny(char_data.vocab_size), cfg, char_data, tmp_path / "other", store, progress=False)
    assert not first.reused and second.reused and second.run_id == first.run_id
    assert second.val_loss == first.val_loss and second.history == first.history
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()))
    assert not (tmp_path / "other").exists()
    run = store.run(first.run_id)
    assert run.status == "finished" and [s for s, _ in store.metrics(run.id)["val_loss"]] == [4]
    third = train_or_reuse(tiny(char_data.vocab_size), cfg.replace(seed=1), char_data, tmp_path / "s1", store,
                           progress=False)
    assert not third.reused and len(store.runs(kind="train")) == 2


def test_divergence_stops_with_a_message_and_keeps_the_last_checkpoint(char_data, tmp_path):
    cfg = CFG.replace(steps=40, lr=1e4, min_lr=1e4, warmup=0, grad_clip=0.0, checkpoint_every=1, weight_decay=0.0)
    with pytest.raises(FFNLabError, match=r"training diverged: loss is (nan|inf) at step \d+; the last good"):
        train(tiny(char_data.vocab_size, dropout=0.0), cfg, char_data, tmp_path, progress=False)
    assert load_model(tmp_path) is not None


def test_hold_reaches_the_floor_early_and_stays_there():
    cfg = TrainConfig(steps=100, lr=1e-2, min_lr=1e-3, warmup=10, hold=0.2)
    rates = [lr_at(i, cfg) for i in range(100)]
    assert rates[79] > cfg.min_lr and all(r == pytest.approx(cfg.min_lr) for r in rates[80:])
    assert all(a >= b - 1e-12 for a, b in zip(rates[9:], rates[10:]))  # no rise after the warmup
    plain = cfg.replace(hold=0.0)
    assert lr_at(89, plain) > cfg.min_lr * 1.01  # without hold the cosine is still decaying there
    for bad in (-0.1, 1.0):
        with pytest.raises(FFNLabError, match="hold must be a share"):
            cfg.replace(hold=bad)


def test_schedule_and_mismatches_are_checked(char_data, tmp_path):
    assert lr_at(0, CFG) == pytest.approx(CFG.lr / 3) and lr_at(2, CFG) == pytest.approx(CFG.lr)
    assert lr_at(CFG.steps, CFG) == pytest.approx(CFG.min_lr)
    with pytest.raises(FFNLabError, match="vocab_size to at least"):
        train(tiny(10), CFG, char_data, tmp_path, progress=False)
    with pytest.raises(FFNLabError, match="exceeds the model's max_seq_len=16"):
        train(tiny(char_data.vocab_size, max_seq_len=16), CFG, char_data, tmp_path, progress=False)
