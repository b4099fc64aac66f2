"""What the claim experiments share: model sizes per mode, data, training with reuse, seeds.

Sizes: "test" (seconds, for the test suite), "quick" (a minute or so per experiment) and
"full" (larger models, more steps, >= 3 seeds). `ctx.options["size"]` overrides the mode.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ffnlab.data import prepare_data
from ffnlab.errors import unknown
from ffnlab.experiments.registry import Context
from ffnlab.model import FFNConfig, ModelConfig
from ffnlab.store import Store
from ffnlab.threads import default_threads
from ffnlab.train import TrainConfig, TrainResult, run_hash, train_or_reuse


@dataclass(frozen=True)
class Size:
    tokenizer: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    seq_len: int
    batch_size: int
    steps: int
    eval_batches: int
    deep_layers: int  # for rank collapse (claim C2)


SIZES = {
    "test": Size("char", 128, 32, 2, 2, 32, 8, 30, 2, 4),
    "quick": Size("bpe", 1024, 64, 4, 4, 64, 16, 200, 8, 12),
    # sized so that all experiments' >= 3 seeds fit about 2 CPU-hours on one thread
    "full": Size("bpe", 2048, 96, 4, 4, 128, 16, 400, 10, 16),
}


def size(ctx: Context) -> Size:
    name = ctx.options.get("size", ctx.mode)
    if name not in SIZES:
        raise unknown("experiment size", name, SIZES)
    return SIZES[name]


@functools.lru_cache(maxsize=4)
def _data(path: str | None, tokenizer: str, vocab_size: int, cache: str):
    return prepare_data(path, tokenizer, vocab_size, cache_dir=cache)


def data(ctx: Context):
    s = size(ctx)
    return _data(ctx.data, s.tokenizer, s.vocab_size, str(ctx.results / "cache"))


def base_model(ctx: Context, vocab_size: int, **changes) -> ModelConfig:
    """A pre-LN decoder of the mode's size with a 4x GELU MLP."""
    s = size(ctx)
    cfg = ModelConfig(vocab_size=vocab_size, d_model=s.d_model, n_layers=s.n_layers, n_heads=s.n_heads,
                      max_seq_len=max(s.seq_len, 64), ffn=FFNConfig(kind="mlp", activation="gelu", ratio=4.0))
    return cfg.replace(**changes) if changes else cfg


def train_config(ctx: Context, seed: int, **changes) -> TrainConfig:
    s = size(ctx)
    # fp32: at these widths bf16 autocast costs more in casts than it saves in matmuls
    cfg = TrainConfig(steps=s.steps, batch_size=s.batch_size, seq_len=s.seq_len, lr=3e-3, min_lr=3e-4,
                      warmup=max(1, s.steps // 10), eval_every=s.steps, eval_batches=s.eval_batches,
                      checkpoint_every=s.steps, precision="fp32", seed=seed, log_every=max(1, s.steps // 20))
    return cfg.replace(**changes) if changes else cfg


def fit(ctx: Context, model_cfg: ModelConfig, train_cfg: TrainConfig, task, name: str) -> TrainResult:
    """Train (or reuse a finished identical run from the store) and return the model in eval mode."""
    store = Store(ctx.results)
    out = Path(ctx.results) / "runs" / run_hash(model_cfg, train_cfg, task)
    return train_or_reuse(model_cfg, train_cfg, task, out, store=store, name=name, progress=ctx.progress,
                          device=ctx.device)


@contextlib.contextmanager
def few_threads(n: int | None = None) -> Iterator[None]:
    """Run on `n` threads (default: the cores idle when the process started, see ffnlab.threads):
    on a shared machine, threads beyond the idle cores wait for busy ones (measured: 25x slower steps)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n or default_threads())
    try:
        yield
    finally:
        torch.set_num_threads(old)


def progress_bar(items, ctx: Context, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not ctx.progress, dynamic_ncols=True)
