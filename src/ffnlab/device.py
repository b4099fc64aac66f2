"""Where tensors live: one place that picks the device, its autocast, and its RNG state.

    device = resolve_device("auto")                  # cuda if present, else mps, else cpu
    with autocast(device, "bf16"): logits = model(x) # bf16 on CUDA and on CPUs that support it
    state = rng_state(device)                        # the device's generator, for checkpoints

Depends on torch and `ffnlab.errors` only, so every layer (model excepted) can use it.
"""

from __future__ import annotations

import contextlib
import itertools

import torch
from torch import Tensor

from ffnlab.errors import FFNLabError, unknown

DEVICES = ("auto", "cpu", "cuda", "mps")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def available() -> list[str]:
    """The device types this machine can run on, cpu first."""
    return ["cpu"] + [name for name, ok in (("cuda", cuda_available()), ("mps", mps_available())) if ok]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None): cuda if available, else mps if available, else cpu. `meta` is accepted
    (shapes without data, for tests). Asking for a device that is not here is a user error."""
    if isinstance(device, torch.device):
        spec = device
    else:
        name = "auto" if device is None else str(device)
        if name == "auto":
            here = available()
            return torch.device("cuda" if "cuda" in here else "mps" if "mps" in here else "cpu")
        kind = name.split(":")[0]
        if kind not in (*DEVICES, "meta"):
            raise unknown("device", name, DEVICES)
        try:
            spec = torch.device(name)
        except RuntimeError:
            raise FFNLabError(f"invalid device {name!r}; use one of {', '.join(DEVICES)} "
                              "(optionally cuda:N)") from None
    if spec.type in ("cpu", "meta"):
        return spec
    if spec.type not in available():
        here = ", ".join(["auto", *available()])
        raise FFNLabError(f"device {spec.type!r} is not available here; available: {here}")
    if spec.type == "cuda" and spec.index is not None and spec.index >= torch.cuda.device_count():
        raise FFNLabError(f"device {str(spec)!r} does not exist; this machine has {torch.cuda.device_count()} "
                          "CUDA device(s)")
    return spec


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast is worth it on `device`: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    return False


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for `precision="bf16"` where `bf16_supported(device)`; otherwise fp32 (no autocast)."""
    kind = torch.device(device).type
    if precision == "bf16" and bf16_supported(kind):
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(tensors: tuple[Tensor, ...], device: torch.device) -> tuple[Tensor, ...]:
    """Move a batch (CPU tensors from a data source) to `device` once; asynchronous from pinned memory on CUDA."""
    def move(t: Tensor) -> Tensor:
        if t.device == device:
            return t
        if device.type == "cuda" and t.device.type == "cpu":
            return t.pin_memory().to(device, non_blocking=True)
        return t.to(device)
    return tuple(move(t) for t in tensors)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's inputs go: the device of its first parameter (or buffer), cpu for a module with
    neither; for a model spread over devices by accelerate (`device_map`), its first block's device."""
    spread = getattr(getattr(module, "hf", module), "hf_device_map", None)
    if spread:
        first = next(iter(spread.values()))
        return torch.device("cpu" if first in ("cpu", "disk") else f"cuda:{first}" if isinstance(first, int)
                            else first)
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for wall-clock timings); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def rng_state(device: torch.device) -> Tensor | None:
    """The generator state of `device` (a CPU uint8 tensor), or None for devices that use torch's CPU one."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return None


def set_rng_state(device: torch.device, state: Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)

