"""Train a Transformer as a causal LM (decoder) or masked LM (encoder), resumably and reproducibly.

AdamW (Loshchilov & Hutter 2019) with linear warmup and cosine decay, gradient clipping and
accumulation, the MoE load-balancing loss, held-out loss on a schedule, atomic checkpoints.
Batches are pure functions of (step, seed), and the torch RNG is checkpointed, so a run that
is interrupted and resumed ends with the same weights, bit for bit, as one that was not
(on the same machine with the same number of torch threads, which fixes the summation order).
The device (`device="auto"|"cpu"|"cuda"|"mps"`) is not part of a run's identity: a checkpoint
written on one device resumes on another, exactly so on the same device type (its RNG is saved).

Under torch.distributed (`torchrun --nproc-per-node N -m ffnlab train ...`, or `ffnlab train
--nproc N`) the model is wrapped in DistributedDataParallel (gloo on CPUs, NCCL on GPUs): every
rank draws the same global batch and trains on its 1/N of the rows, and the loss is the global
batch's mean (each rank's summed loss over the global count of predicted tokens), so the loss
curve equals one process's at the same batch size to float rounding (MoE's load-balancing loss
is the mean of the ranks' own). Rank 0 alone holds the lock, writes checkpoints and the store; a
checkpoint resumes on any number of ranks. Held-out batches are shared out and their sums added.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F_
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ffnlab import distributed as dist
from ffnlab.data.ngram import beside
from ffnlab.data.tokens import IGNORE, MLMData, TokenData
from ffnlab.device import autocast, module_device, to_device
from ffnlab.errors import FFNLabError
from ffnlab.fingerprint import code_fingerprint
from ffnlab.model import ModelConfig, Transformer
from ffnlab.model.moe import MoE
from ffnlab.store import Run, Store, config_hash
from ffnlab.train.checkpoint import (CHECKPOINT, TrainerState, checkpoint_dir, clean_stale, load_model,
                                     load_trainer_state, locked, read_model_config, restore, save_checkpoint, seal,
                                     weights_sha256)
from ffnlab.train.config import TrainConfig


class Data(Protocol):
    """What `train` needs from data (TokenData, MLMData, or any synthetic task)."""

    vocab_size: int
    fingerprint: str

    def batch(self, split: str, index: int, batch_size: int, seq_len: int, seed: int) -> tuple[Tensor, Tensor]: ...


@dataclass
class TrainResult:
    model: Transformer  # eval mode
    run_id: int | None
    val_loss: float  # nats per predicted token, held out, fp32
    history: list[dict[str, float]]
    out_dir: Path
    tokens_per_second: float
    steps: int = 0
    reused: bool = False  # loaded from a finished run instead of trained
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def val_ppl(self) -> float:
        return math.exp(self.val_loss)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for 0-based `step`: linear warmup, then cosine from `lr` to `min_lr`, reached
    `hold` of the steps before the end (then held)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    end = cfg.steps - round(cfg.hold * cfg.steps)
    progress = (step - cfg.warmup) / max(1, end - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: Transformer, cfg: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only: not on norms, biases or embeddings (nanoGPT, GPT-3)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        embedding = name.startswith(("tok.", "pos.", "types."))
        (decay if p.dim() >= 2 and not embedding else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per parameter instead of a dozen foreach passes; on a shared CPU every
    # parallel region waits for all threads to be scheduled, so fewer regions is much faster
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def for_model(model_cfg: ModelConfig, data: Data) -> Data:
    """Encoders learn masked-LM: wrap plain token data in `MLMData`."""
    if model_cfg.arch == "encoder" and isinstance(data, TokenData):
        return MLMData(data)
    return data


def run_hash(model_cfg: ModelConfig, train_cfg: TrainConfig, data: Data) -> str:
    return config_hash({"model": model_cfg.to_dict(), "train": train_cfg.to_dict(), "data": data.fingerprint})


def training_code(data: Data) -> str:
    """Fingerprint of the code a run's weights depend on: the trainer (and all it imports) and the data's module."""
    return code_fingerprint("ffnlab.train.trainer", type(data).__module__)


def loss_of(model: Transformer | DistributedDataParallel, inputs: Tensor, targets: Tensor,
            count: int | None = None) -> tuple[Tensor, Tensor]:
    """(training loss incl. auxiliary losses, LM loss in nats).

    With `count` (DDP: `inputs` are this rank's rows of a global batch with `count` predicted
    tokens), the LM loss is this rank's share of the global mean, and the training loss is scaled
    by the number of ranks, which DDP's gradient averaging divides out again.
    """
    logits = model(inputs)  # (B, T, V)
    core = model.module if isinstance(model, DistributedDataParallel) else model
    aux = core.aux_loss()
    if count is None:
        lm = F_.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        return (lm + aux if aux is not None else lm), lm
    lm = F_.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum") / count
    total = lm * dist.world()
    return (total + aux if aux is not None else total), lm


def train_step(model: Transformer | DistributedDataParallel, opt: torch.optim.Optimizer,
               batches: list[tuple[Tensor, Tensor]], cfg: TrainConfig, counts: list[int] | None = None) -> float:
    """One optimizer step over `batches` (gradient accumulation, on the model's device); returns the mean LM loss.

    `counts`: under DDP, the predicted tokens of each micro-batch's global batch (see `loss_of`);
    the returned loss is then the global batch's, the same on every rank.
    A non-finite loss returns before the update, so the weights stay those of the last good step.
    """
    device = module_device(model)
    lms = []
    for i, (inputs, targets) in enumerate(batches):
        # DDP: gradients are averaged over ranks once per step, after the last micro-batch
        last = i == len(batches) - 1
        with contextlib.nullcontext() if counts is None or last else model.no_sync():
            with autocast(device, cfg.precision):
                total, lm = loss_of(model, inputs, targets, None if counts is None else counts[i])
            (total / len(batches)).backward()
        lms.append(lm.detach())
    loss = 0.0
    if counts is not None:  # the shares of every rank add up to the global batch's loss
        loss = float(dist.all_sum(torch.stack(lms).sum().double())) / len(batches)
    else:
        for lm in lms:  # read after every micro-batch is queued: one wait per step on an accelerator
            loss += lm.item() / len(batches)
    if math.isfinite(loss):
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


@torch.no_grad()
def evaluate(model: Transformer, data: Data, split: str = "val", batches: int = 20, batch_size: int = 32,
             seq_len: int = 128, seed: int = 0, precision: str = "fp32") -> float:
    """Mean cross-entropy (nats per predicted token) over `batches` fixed batches of `split`, on the model's device."""
    device = module_device(model)
    if hasattr(model, "config"):
        data = for_model(model.config, data)
    was_training = model.training
    model.eval()
    sums, count = [], 0
    try:
        for i in range(dist.rank(), batches, dist.world()):  # DDP: the ranks share the batches out
            batch = data.batch(split, i, batch_size, seq_len, seed)
            count += int((batch[1] != IGNORE).sum())  # counted on the CPU: no wait for the device
            inputs, targets = to_device(batch, device)
            with autocast(device, precision):
                logits = model(inputs)
            sums.append(F_.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE,
                                         reduction="sum"))
    finally:
        model.train(was_training)
    if dist.world() > 1:
        both = dist.all_sum(torch.stack([sum(sums, torch.zeros((), device=device)).double(),
                                         torch.tensor(float(count), dtype=torch.float64, device=device)]))
        return float(both[0]) / max(float(both[1]), 1.0)
    total = 0.0
    for part in sums:  # read once every batch is queued
        total += part.item()
    return total / max(count, 1)


def _check(model_cfg: ModelConfig, cfg: TrainConfig, data: Data) -> None:
    if data.vocab_size > model_cfg.vocab_size:
        raise FFNLabError(f"the data has {data.vocab_size} token ids but the model's vocab_size is "
                          f"{model_cfg.vocab_size}; set the model's vocab_size to at least {data.vocab_size}")
    if cfg.seq_len > model_cfg.max_seq_len:
        raise FFNLabError(f"seq_len={cfg.seq_len} exceeds the model's max_seq_len={model_cfg.max_seq_len}")
    if not model_cfg.lm_head:
        raise FFNLabError("the model has no LM head (lm_head=False); it cannot be trained as a language model")
    data.batch("train", 0, 1, cfg.seq_len, cfg.seed)  # fails early with a clear message if too small
    data.batch("val", 0, 1, cfg.seq_len, cfg.seed)


def _resume_state(out_dir: Path, model_cfg: ModelConfig, cfg: TrainConfig, data: Data) -> Path | None:
    ckpt = checkpoint_dir(out_dir)
    if ckpt is None or ckpt == out_dir:
        return None
    saved = load_trainer_state(ckpt)
    same_model = read_model_config(ckpt) == model_cfg
    if not (same_model and saved.train == cfg.to_dict() and saved.data == data.fingerprint):
        raise FFNLabError(f"{str(out_dir)!r} holds a checkpoint of a different run (model, train config or data "
                          "differ); choose another output directory or start over without resuming")
    return ckpt


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, data: Data, out_dir: str | Path,
          store: Store | None = None, name: str = "", progress: bool = True, resume: bool = True,
          device: str | torch.device = "auto") -> TrainResult:
    """Train from scratch, or continue the checkpoint in `out_dir` when `resume` (the default), on `device`."""
    cfg, out_dir = train_cfg, Path(out_dir)
    device = dist.rank_device(device)
    data = for_model(model_cfg, data)
    _check(model_cfg, cfg, data)
    if cfg.batch_size % dist.world():
        raise FFNLabError(f"batch_size {cfg.batch_size} does not split evenly over {dist.world()} processes; "
                          f"use a multiple of {dist.world()}")
    with locked(out_dir) if dist.is_main() else contextlib.nullcontext():
        if dist.is_main():
            clean_stale(out_dir)
        dist.barrier()  # the others read the checkpoint once rank 0 has tidied it
        return _train(model_cfg, cfg, data, out_dir, store if dist.is_main() else None, name,
                      progress and dist.is_main(), resume, device)


def _train(model_cfg: ModelConfig, cfg: TrainConfig, data: Data, out_dir: Path, store: Store | None, name: str,
           progress: bool, resume: bool, device: torch.device) -> TrainResult:
    torch.manual_seed(cfg.seed)  # seeds every device's generator
    model = Transformer(model_cfg).to(device).train()  # initialised on the CPU: the same weights on any device
    opt = make_optimizer(model, cfg)
    state = TrainerState(step=0, train=cfg.to_dict(), data=data.fingerprint)
    ckpt = _resume_state(out_dir, model_cfg, cfg, data) if resume else None
    if ckpt is not None:
        state = restore(ckpt, model, opt)
    run_id = _open_run(store, state, model_cfg, cfg, data, name)
    state.run_id = run_id
    try:
        _loop(model, _parallel(model, device), opt, cfg, data, state, out_dir, store, name, progress)
        val_loss = evaluate(model, data, "val", cfg.eval_batches, cfg.batch_size, cfg.seq_len, cfg.seed)
    except BaseException as err:
        if store is not None and run_id is not None:
            store.fail_run(run_id, str(err) or type(err).__name__, {"step": state.step})
        raise
    tps = state.tokens / state.seconds if state.seconds else 0.0
    code = training_code(data)
    sealed = seal(out_dir / CHECKPOINT, state, code) if dist.is_main() else ""
    summary = {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)), "steps": state.step,
               "tokens": state.tokens, "train_seconds": state.seconds, "tokens_per_second": tps,
               "params": sum(p.numel() for p in model.parameters()), "out_dir": str(out_dir.resolve()),
               "device": device.type, "processes": dist.world(), "code": code, "weights_sha256": sealed,
               **beside(data, val_loss)}
    if dist.is_main():
        clean_stale(out_dir)
    if store is not None and run_id is not None:
        store.add_artifact(run_id, "checkpoint", out_dir / CHECKPOINT)
        store.finish_run(run_id, summary, wall_seconds=state.wall)
    return TrainResult(model.eval(), run_id, val_loss, state.history, out_dir, tps, state.step, summary=summary)


def _open_run(store: Store | None, state: TrainerState, model_cfg: ModelConfig, cfg: TrainConfig, data: Data,
              name: str) -> int | None:
    if store is None:
        return state.run_id
    h = run_hash(model_cfg, cfg, data)
    if state.run_id is not None:
        try:
            if store.run(state.run_id).config_hash == h:
                store.restart_run(state.run_id, from_step=state.step)
                return state.run_id
        except FFNLabError:
            pass  # the checkpoint's run is not in this store: record a new one
    config = {"model": model_cfg.to_dict(), "train": cfg.to_dict(), "data": data.fingerprint}
    return store.start_run("train", config, name=name, seed=cfg.seed, hash=h)


def _parallel(model: Transformer, device: torch.device) -> Transformer | DistributedDataParallel:
    """The model wrapped in DDP when several processes train it (itself in one)."""
    if dist.world() == 1:
        return model
    # experts that get no tokens in a step have no gradient: DDP must look for them
    sparse = any(isinstance(ffn, MoE) for ffn in model.ffns())
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=sparse)


def _rank_rows(batch: tuple[Tensor, Tensor]) -> tuple[tuple[Tensor, Tensor], int]:
    """This rank's rows of a global batch, and the batch's count of predicted tokens."""
    rows = dist.my_part(batch[0].shape[0])
    return (batch[0][rows], batch[1][rows]), int((batch[1] != IGNORE).sum())


def _loop(model: Transformer, parallel: Transformer | DistributedDataParallel, opt: torch.optim.Optimizer,
          cfg: TrainConfig, data: Data, state: TrainerState, out_dir: Path, store: Store | None, name: str,
          progress: bool) -> None:
    bar = tqdm(total=cfg.steps * cfg.tokens_per_step, initial=state.step * cfg.tokens_per_step, unit="tok",
               unit_scale=True, disable=not progress, desc=name or "train", dynamic_ncols=True)
    last_good = state.step if checkpoint_dir(out_dir) else None
    device = module_device(model)
    t_start, wall_before = time.perf_counter(), state.wall  # wall: time this run's processes were alive
    try:
        for step in range(state.step, cfg.steps):
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            batches = [data.batch("train", step * cfg.grad_accum + micro, cfg.batch_size, cfg.seq_len, cfg.seed)
                       for micro in range(cfg.grad_accum)]
            counts = None
            if parallel is not model:  # every rank draws the global batch and keeps its rows
                batches, counts = map(list, zip(*(_rank_rows(b) for b in batches)))
            loss = train_step(parallel, opt, [to_device(b, device) for b in batches], cfg, counts)
            if not math.isfinite(loss):
                kept = f"the last good checkpoint (step {last_good}) is kept in {str(out_dir)!r}" \
                    if last_good is not None else "no checkpoint was written yet"
                raise FFNLabError(f"training diverged: loss is {loss} at step {step + 1}; {kept}; "
                                  "try a lower lr or a longer warmup")
            state.seconds += time.perf_counter() - t0
            state.tokens += cfg.tokens_per_step
            state.step = step + 1
            state.loss_sum += loss
            state.loss_count += 1
            bar.update(cfg.tokens_per_step)
            if progress:
                bar.set_postfix(loss=f"{loss:.3f}", step=state.step, refresh=False)
            if store is not None and state.run_id is not None and (state.step % cfg.log_every == 0):
                store.log_metrics(state.run_id, state.step, {"train_loss": loss, "lr": lr})
            if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                _record_eval(model, cfg, data, state, store, lr)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                state.wall = wall_before + time.perf_counter() - t_start
                if dist.is_main():
                    save_checkpoint(out_dir, model, opt, state, getattr(data, "tokenizer", None))
                last_good = state.step
    finally:
        bar.close()


def _record_eval(model: Transformer, cfg: TrainConfig, data: Data, state: TrainerState, store: Store | None,
                 lr: float) -> None:
    val = evaluate(model, data, "val", cfg.eval_batches, cfg.batch_size, cfg.seq_len, cfg.seed)
    train_loss = state.loss_sum / max(state.loss_count, 1)
    state.loss_sum, state.loss_count = 0.0, 0
    entry = {"step": state.step, "train_loss": train_loss, "val_loss": val, "val_ppl": math.exp(min(val, 50.0)),
             "tokens": state.tokens, "seconds": state.seconds, "lr": lr}
    state.history.append(entry)
    if store is not None and state.run_id is not None:
        store.log_metrics(state.run_id, state.step, {"val_loss": val, "val_ppl": entry["val_ppl"]})


def train_or_reuse(model_cfg: ModelConfig, train_cfg: TrainConfig, data: Data, out_dir: str | Path,
                   store: Store | None = None, name: str = "", progress: bool = True,
                   resume: bool = True, device: str | torch.device = "auto") -> TrainResult:
    """Like `train`, but a finished run in `store` with the same model, train config and data
    (and a checkpoint still on disk) is loaded (onto `device`) instead of trained again."""
    if store is not None:
        run, ckpt = finished_run(store, model_cfg, train_cfg, data)
        if ckpt is not None:
            saved = load_trainer_state(ckpt)
            s = run.summary
            return TrainResult(load_model(ckpt, device), run.id, float(s["val_loss"]), saved.history, ckpt.parent,
                               float(s.get("tokens_per_second", 0.0)), saved.step, reused=True, summary=s)
    return train(model_cfg, train_cfg, data, out_dir, store, name, progress, resume, device)


def finished_run(store: Store, model_cfg: ModelConfig, train_cfg: TrainConfig, data: Data
                 ) -> tuple[Run | None, Path | None]:
    """The finished run in `store` with this model, train config and data, and its checkpoint if
    that verifiably holds the run's result (see `reusable_checkpoint`); (None, None) if there is none."""
    data = for_model(model_cfg, data)
    run = store.find_finished("train", run_hash(model_cfg, train_cfg, data))
    return run, (reusable_checkpoint(store, run, training_code(data)) if run is not None else None)


def reusable_checkpoint(store: Store, run: Run, code: str) -> Path | None:
    """The checkpoint of the finished training `run` if it verifiably holds that run's result, else None.

    Verified: the checkpoint's model, train config and data hash to the run's config hash, it
    reached the run's step count, it was trained by code with fingerprint `code` (see
    `training_code`), and its weights have the sha256 recorded when the run finished.
    """
    path = store.artifacts(run.id).get("checkpoint")
    ckpt = checkpoint_dir(path) if path is not None else None
    recorded = run.summary.get("weights_sha256")
    if ckpt is None or ckpt.name != CHECKPOINT or run.status != "finished" or not recorded:
        return None
    try:
        saved = load_trainer_state(ckpt)
        config = {"model": read_model_config(ckpt).to_dict(), "train": saved.train, "data": saved.data}
    except FFNLabError:
        return None
    same = (config_hash(config) == run.config_hash and saved.step == saved.train.get("steps")
            and saved.code == run.summary.get("code") == code and saved.weights_sha256 == recorded)
    return ckpt if same and weights_sha256(ckpt) == recorded else None
