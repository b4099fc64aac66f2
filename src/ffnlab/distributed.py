"""Several processes working as one, on `torch.distributed` as launched by `torchrun`.

    torchrun --standalone --nproc-per-node 4 -m ffnlab train ...   # or: ffnlab train --nproc 4
    with process_group("auto") as device: ...                       # joins torchrun's group (env://)

gloo on the CPU, NCCL on CUDA (each rank on `cuda:LOCAL_RANK`). Outside a group `world()` is 1
and `rank()` 0, so code written for N processes runs unchanged in one. Depends on torch,
`ffnlab.device` and `ffnlab.errors` only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import uuid
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from ffnlab.device import resolve_device
from ffnlab.errors import FFNLabError


def launched() -> bool:
    """Whether this process is one of several started by torchrun (its environment says so)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: str | torch.device = "auto") -> torch.device:
    """The device this rank works on: under torchrun, CUDA means the rank's own GPU (`LOCAL_RANK`)."""
    device = resolve_device(device)
    if device.type == "cuda" and device.index is None and launched():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise FFNLabError(f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
                              "start at most that many processes per node")
        device = torch.device("cuda", local)
    if device.type == "mps" and launched():
        raise FFNLabError("several processes cannot share mps; use --device cpu or one process")
    return device


@contextlib.contextmanager
def process_group(device: str | torch.device = "auto") -> Iterator[torch.device]:
    """Join the group torchrun set up (if this process was launched by it and is not in one yet),
    yield the rank's device, and leave the group on exit."""
    device = rank_device(device)
    if not launched() or active():
        yield device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend(device), device_id=device if device.type == "cuda" else None)
    try:
        yield device
    except RuntimeError as err:  # DistBackendError and gloo's errors are RuntimeErrors
        if not (isinstance(err, dist.DistError) or "peer" in str(err)):
            raise
        # why: the rank that failed first printed its own error; this one only lost its peer
        raise FFNLabError(f"process {rank()} of {world()} stopped: another process of the group failed "
                          "(its error is above)") from None
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. building a cache), the others after it: no two write the same files."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_sum(t: Tensor) -> Tensor:
    """Sum `t` over all ranks, in place (on the backend's device: CPU for gloo, CUDA for NCCL)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather(t: Tensor) -> list[Tensor]:
    """`t` of every rank (the same shape on all), in rank order."""
    if not active():
        return [t]
    parts = [torch.empty_like(t) for _ in range(world())]
    dist.all_gather(parts, t.contiguous())
    return parts


def broadcast(t: Tensor, src: int = 0) -> Tensor:
    """Rank `src`'s `t` on every rank, in place."""
    if active():
        dist.broadcast(t, src)
    return t


def my_part(n: int) -> slice:
    """This rank's rows of n rows split evenly (n divisible by the world size)."""
    size = n // world()
    return slice(rank() * size, (rank() + 1) * size)


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `python -m ffnlab ARGV` in `nproc` processes on this node through torchrun's launcher
    (torch.distributed.elastic, rendezvous on a free local port); the exit code of the first
    failing rank, else 0. Each rank prints its own errors; the launcher's own log stays quiet."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from ffnlab.threads import default_threads

    if nproc < 1:
        raise FFNLabError(f"--nproc must be a positive integer, got {nproc}")
    # why: N processes each taking every idle core would fight over them
    os.environ.setdefault("FFNLAB_THREADS", str(max(1, default_threads() // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.1)
    quiet = [logging.getLogger(name) for name in ("torch.distributed.elastic", "torch.distributed.launcher")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-m", "ffnlab", *argv)
    except ChildFailedError as err:
        _, first = err.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 1
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
    return 0
