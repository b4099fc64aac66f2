"""Checkpoints: safetensors weights, optimizer state and RNG, configs and progress as JSON.

A checkpoint is a directory written completely under a temporary name and then renamed
into place, so `out_dir/checkpoint` is always a whole checkpoint (never a mix of steps).
Nothing is pickled: tensors go through safetensors, everything else through JSON.

    out_dir/checkpoint/model.safetensors      weights (tied weights stored once)
    out_dir/checkpoint/model.json             ModelConfig
    out_dir/checkpoint/optimizer.safetensors  AdamW moments and step per parameter, torch RNG
                                              (and the generator of the device trained on: rng.cuda, rng.mps)
    out_dir/checkpoint/trainer.json           step, TrainConfig, data fingerprint, history, run id
    out_dir/checkpoint/tokenizer.json         the tokenizer the run was trained with (absent for synthetic data)

At the end of a run, trainer.json also records the training-code fingerprint and the sha256 of
model.safetensors, so a reused checkpoint can be checked to be the one that run produced.
A lock file (`out_dir/.lock`) keeps two processes from training into the same directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ffnlab.data.tokenizer import Tokenizer, load_saved
from ffnlab.device import module_device, resolve_device, rng_state, set_rng_state
from ffnlab.errors import FFNLabError
from ffnlab.model import ModelConfig, Transformer
from ffnlab.results import atomic_write_bytes, atomic_write_text

CHECKPOINT = "checkpoint"
TOKENIZER = "tokenizer.json"
_OLD = ".checkpoint-old"
_TMP = ".checkpoint-tmp-"
_FILES = ("model.safetensors", "model.json", "optimizer.safetensors", "trainer.json")


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
    wall: float = 0.0  # wall-clock seconds the run's processes worked up to this checkpoint
    code: str = ""  # training-code fingerprint, recorded at the end of the run
    weights_sha256: str = ""  # of model.safetensors, recorded at the end of the run


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


def save_checkpoint(out_dir: Path, model: Transformer, opt: torch.optim.Optimizer, state: TrainerState,
                    tokenizer: Tokenizer | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=_TMP))
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
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER)
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


def _damaged(file: Path, err: Exception) -> FFNLabError:
    why = str(err).splitlines()[0] if str(err) else type(err).__name__
    return FFNLabError(f"damaged checkpoint file {str(file)!r}: {why}")


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a missing, truncated or garbage file is one clear error."""
    try:
        return st_load(file.read_bytes())
    except Exception as err:  # OSError, or safetensors' own SafetensorError for a damaged file
        raise _damaged(file, err) from None


def read_model_config(ckpt: Path) -> ModelConfig:
    file = ckpt / "model.json"
    try:
        return ModelConfig.from_dict(_read_json(file))
    except (TypeError, AttributeError) as err:
        raise _damaged(file, err) from None


def _read_json(file: Path) -> dict[str, Any]:
    try:
        d = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(file, err) from None
    if not isinstance(d, dict):
        raise _damaged(file, TypeError("not a JSON object"))
    return d


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """A trained model (eval mode, on `device`) from a run directory or a checkpoint directory."""
    ckpt = checkpoint_dir(path)
    if ckpt is None:
        raise FFNLabError(f"no checkpoint at {str(path)!r} (expected model.safetensors and model.json)")
    model = Transformer(read_model_config(ckpt))
    load_weights(model, read_tensors(ckpt / "model.safetensors"))
    return model.to(resolve_device(device)).eval()


def load_tokenizer(ckpt: Path) -> Tokenizer:
    """The tokenizer a run was trained with, saved in its checkpoint."""
    if not (ckpt / TOKENIZER).is_file():
        raise FFNLabError(f"checkpoint {str(ckpt)!r} has no saved tokenizer ({TOKENIZER}; checkpoints written "
                          "before ffnlab saved tokenizers lack it): train the run again to analyse its text")
    return load_saved(ckpt / TOKENIZER)


def load_trainer_state(ckpt: Path) -> TrainerState:
    file = ckpt / "trainer.json"
    try:
        return TrainerState(**_read_json(file))
    except TypeError as err:
        raise _damaged(file, err) from None


def weights_sha256(ckpt: Path) -> str:
    h = hashlib.sha256()
    with open(ckpt / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal(ckpt: Path, state: TrainerState, code: str) -> str:
    """Record in a finished run's checkpoint the code that trained it and its weights' sha256."""
    state.code, state.weights_sha256 = code, weights_sha256(ckpt)
    atomic_write_text(ckpt / "trainer.json", json.dumps(state.__dict__, indent=1))
    return state.weights_sha256


def clean_stale(out_dir: Path) -> None:
    """Remove what a killed checkpoint write left: temporary directories, and the previous
    checkpoint once the current one is whole."""
    for tmp in out_dir.glob(f"{_TMP}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    if all((out_dir / CHECKPOINT / f).is_file() for f in _FILES):
        shutil.rmtree(out_dir / _OLD, ignore_errors=True)


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold `out_dir/.lock` while training into `out_dir`; a second process gets one clear error."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FFNLabError(f"the output directory {str(out_dir)!r} is a file; give a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FFNLabError(f"another ffnlab process is training into {str(out_dir)!r}; wait for it to finish "
                              "or choose another output directory") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def restore(ckpt: Path, model: Transformer, opt: torch.optim.Optimizer) -> TrainerState:
    """Load weights, optimizer moments and the RNG of a checkpoint into `model` and `opt` (on any device).

    The device's own generator is restored when the checkpoint was written on the same device type.
    """
    load_weights(model, read_tensors(ckpt / "model.safetensors"))
    tensors = read_tensors(ckpt / "optimizer.safetensors")
    if "rng.torch" not in tensors:
        raise _damaged(ckpt / "optimizer.safetensors", KeyError("no rng.torch"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    device = module_device(model)
    saved = {name: tensors.pop(name) for name in list(tensors) if name.startswith("rng.")}
    if f"rng.{device.type}" in saved:
        set_rng_state(device, saved[f"rng.{device.type}"])
    load_optimizer(opt, tensors)
    return load_trainer_state(ckpt)
