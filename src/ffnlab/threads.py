"""How many CPU threads torch should use.

On a 2-core machine, two threads make a training step about 1.75x faster when the machine
is idle, but several times slower when another process holds a core: OpenMP threads then
wait for a core that is busy. So ffnlab uses the cores that were idle when it started
(`FFNLAB_THREADS` overrides), decided once per process; the processes torchrun starts on one
node (`LOCAL_WORLD_SIZE`) share them out.
"""

from __future__ import annotations

import functools
import os

from ffnlab.errors import FFNLabError


@functools.cache
def default_threads() -> int:
    """`$FFNLAB_THREADS`, else the number of cores minus the 1-minute load average (at least 1)."""
    env = os.environ.get("FFNLAB_THREADS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise FFNLabError(f"FFNLAB_THREADS must be a positive integer, got {env!r}")
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(cores, round(cores - load)) // per_node)
