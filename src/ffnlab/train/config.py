"""`TrainConfig`: everything that decides a training run besides the model and the data."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ffnlab.errors import FFNLabError, check_field_types, unknown

PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    """AdamW with linear warmup then cosine decay to `min_lr` (as in GPT-3 / nanoGPT); with `hold` > 0
    the decay ends `hold` of the steps early and the rate stays at `min_lr` for the rest (so that a
    plateau over the last steps is learning that has stopped, not the cosine's last annealing).

    One step sees `batch_size * grad_accum` sequences of `seq_len` tokens. Held-out loss is
    measured every `eval_every` steps over `eval_batches` batches; a checkpoint is written
    every `checkpoint_every` steps and at the end.
    """

    steps: int = 1000
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    hold: float = 0.0  # share of the steps, at the end, trained at min_lr
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    grad_accum: int = 1
    precision: str = "bf16"  # bf16 autocast on CUDA and on CPUs that support it, else fp32
    eval_every: int = 200
    eval_batches: int = 20
    log_every: int = 10
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.precision not in PRECISIONS:
            raise unknown("precision", self.precision, PRECISIONS)
        for name in ("steps", "batch_size", "seq_len", "grad_accum", "eval_every", "eval_batches",
                     "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FFNLabError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise FFNLabError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise FFNLabError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        if not 0 <= self.hold < 1:
            raise FFNLabError(f"hold must be a share of the steps in [0, 1), got {self.hold!r}")
        if not self.lr > 0:
            raise FFNLabError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise FFNLabError(f"min_lr must be between 0 and lr={self.lr}, got {self.min_lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise FFNLabError("weight_decay and grad_clip must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise FFNLabError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise FFNLabError(f"a train config must be a table of settings, got {d!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - names)
        if extra:
            raise unknown("train config field", extra[0], names)
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))
