"""DDP training on two gloo processes (torchrun): the single process's loss curve at the same global
batch, one checkpoint written by rank 0, and checkpoints that resume on another number of ranks."""

import json

import pytest
import torch
from launch import torchrun
from ranks import MODEL, TRAIN, Crashed, reference_train

from ffnlab.model import Transformer
from ffnlab.train import load_model
from ffnlab.train.checkpoint import load_trainer_state


def curve(history: list[dict]) -> list[tuple[float, float]]:
    return [(h["train_loss"], h["val_loss"]) for h in history]


def assert_same_run(one, run_dir) -> None:
    """The run in `run_dir` has `one`'s loss curve (every step) and weights, to float rounding (summation
    orders differ: the gradient all-reduce, the split batch; Adam's normalised steps carry them along)."""
    other = load_trainer_state(run_dir / "checkpoint")
    assert other.step == one.steps == TRAIN.steps
    assert len(other.history) == len(one.history) == TRAIN.steps
    assert torch.allclose(torch.tensor(curve(other.history)), torch.tensor(curve(one.history)), rtol=0, atol=1e-4)
    theirs, ours = load_model(run_dir).state_dict(), one.model.state_dict()
    torch.manual_seed(TRAIN.seed)
    start = Transformer(MODEL).state_dict()  # the initial weights, as `train` draws them
    moved = max((ours[k] - start[k]).abs().max().item() for k in ours)
    assert max((theirs[k] - ours[k]).abs().max().item() for k in ours) < 0.01 * moved


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    torch.set_num_threads(1)
    return reference_train(tmp_path_factory.mktemp("one"))


def test_two_ranks_follow_the_single_process_loss_curve_and_resume_on_one(one, tmp_path):
    torchrun(2, "train", tmp_path / "two", tmp_path / "crashed")
    assert one.history[-1]["val_loss"] < one.history[0]["val_loss"] - 0.05  # it learns: the curve means something
    assert_same_run(one, tmp_path / "two")
    state = load_trainer_state(tmp_path / "two" / "checkpoint")
    assert json.loads((tmp_path / "two" / "checkpoint" / "model.json").read_text())["n_layers"] == 2
    assert not list((tmp_path / "two").glob(".checkpoint-*")) and state.weights_sha256  # rank 0 sealed it
    # the two-rank run that died in step 4 left its step-3 checkpoint; one process finishes it
    assert load_trainer_state(tmp_path / "crashed" / "checkpoint").step == 3
    resumed = reference_train(tmp_path / "crashed")
    assert_same_run(resumed, tmp_path / "crashed")
    assert_same_run(one, tmp_path / "crashed")


def test_a_single_process_checkpoint_resumes_on_two_ranks(one, tmp_path):
    with pytest.raises(Crashed):
        reference_train(tmp_path / "run", crash_at=3)
    assert load_trainer_state(tmp_path / "run" / "checkpoint").step == 3
    torchrun(2, "train", tmp_path / "run")
    assert_same_run(one, tmp_path / "run")
