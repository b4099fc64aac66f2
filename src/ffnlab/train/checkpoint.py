"""Checkpoints: safetensors weights, optimizer state and RNG, configs and progress as JSON.

A checkpoint is a directory written completely under a temporary name and then renamed
into place, so `out_dir/checkpoint` is always a whole checkpoint (never a mix of steps).
Nothing is pickled: tensors go through safetensors, everything else through JSON.

    out_dir/checkpoint/model.safetensors      weights (tied weights stored once)
    out_dir/checkpoint/model.json             ModelConfig
    out_dir/checkpoint/optimizer.safetensors  AdamW moments and step per parameter, torch RNG
                                              (and the generator of the device trained on: rng.cuda, rng.mps)
    out_dir/checkpoint/trainer.json           step, TrainConfig, data fingerprint, history, run id
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ffnlab.device import module_device, resolve_device, rng_state, set_rng_state
from ffnlab.errors import FFNLabError
from ffnlab.model import ModelConfig, Transformer
from ffnlab.results import atomic_write_bytes, atomic_write_text

CHECKPOINT = "checkpoint"
_OLD = ".checkpoint-old"


@dataclass
class TrainerState:
    """Progress saved beside the weights: enough to resume exactly."""

    step: int
    train: dict[str, Any]
    data: str  # data fingerprint
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: int | None = None
    tokens: int = 0
    seconds: float = 0.0  # training time so far (excludes evaluation)
    loss_sum: float = 0.0  # training losses since the last evaluation, for the history's mean
    loss_count: int = 0


def unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied tensors (the LM head sharing the embedding) stored once (on the model's device)."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape, t.stride())
        if key not in seen:
            seen.add(key)
            out[name] = t.detach().contiguous()
    return out


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = set(model.state_dict()) - set(unique_state_dict(model))
    if unexpected or set(missing) - tied:
        raise FFNLabError(f"checkpoint does not match the model: missing {sorted(set(missing) - tied)[:3]}, "
                          f"unexpected {sorted(unexpected)[:3]}")


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for pid, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{pid}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def save_checkpoint(out_dir: Path, model: Transformer, opt: torch.optim.Optimizer, state: TrainerState) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".checkpoint-tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is an ordinary directory
    try:
        atomic_write_bytes(tmp / "model.safetensors", st_save(_on_cpu(unique_state_dict(model))))
        atomic_write_text(tmp / "model.json", model.config.to_json())
        device = module_device(model)
        extra = {"rng.torch": torch.get_rng_state()}
        if (state_of_device := rng_state(device)) is not None:
            extra[f"rng.{device.type}"] = state_of_device
        atomic_write_bytes(tmp / "optimizer.safetensors", st_save(_on_cpu({**optimizer_tensors(opt), **extra})))
        atomic_write_text(tmp / "trainer.json", json.dumps(state.__dict__, indent=1))
        final, old = out_dir / CHECKPOINT, out_dir / _OLD
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _on_cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().cpu() for name, t in tensors.items()}


def checkpoint_dir(path: str | Path) -> Path | None:
    """The checkpoint inside a run directory (or `path` itself if it is one), or None."""
    p = Path(path)
    for candidate in (p, p / CHECKPOINT, p / _OLD):  # _OLD: a crash between the two renames
        if (candidate / "model.safetensors").is_file() and (candidate / "model.json").is_file():
            return candidate
    return None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """A trained model (eval mode, on `device`) from a run directory or a checkpoint directory."""
    ckpt = checkpoint_dir(path)
    if ckpt is None:
        raise FFNLabError(f"no checkpoint at {str(path)!r} (expected model.safetensors and model.json)")
    model = Transformer(ModelConfig.from_json((ckpt / "model.json").read_text()))
    load_weights(model, st_load((ckpt / "model.safetensors").read_bytes()))
    return model.to(resolve_device(device)).eval()


def load_trainer_state(ckpt: Path) -> TrainerState:
    return TrainerState(**json.loads((ckpt / "trainer.json").read_text()))


def restore(ckpt: Path, model: Transformer, opt: torch.optim.Optimizer) -> TrainerState:
    """Load weights, optimizer moments and the RNG of a checkpoint into `model` and `opt` (on any device).

    The device's own generator is restored when the checkpoint was written on the same device type.
    """
    load_weights(model, st_load((ckpt / "model.safetensors").read_bytes()))
    tensors = st_load((ckpt / "optimizer.safetensors").read_bytes())
    torch.set_rng_state(tensors.pop("rng.torch"))
    device = module_device(model)
    saved = {name: tensors.pop(name) for name in list(tensors) if name.startswith("rng.")}
    if f"rng.{device.type}" in saved:
        set_rng_state(device, saved[f"rng.{device.type}"])
    load_optimizer(opt, tensors)
    return load_trainer_state(ckpt)
