"""Training: config, the training loop, evaluation, checkpoints, reuse of finished runs."""

from ffnlab.train.checkpoint import checkpoint_dir, load_model
from ffnlab.train.config import TrainConfig
from ffnlab.train.trainer import (TrainResult, evaluate, finished_run, lr_at, reusable_checkpoint, run_hash, train,
                                  train_or_reuse, training_code)

__all__ = ["TrainConfig", "TrainResult", "checkpoint_dir", "evaluate", "finished_run", "load_model", "lr_at",
           "reusable_checkpoint", "run_hash", "train", "train_or_reuse", "training_code"]
