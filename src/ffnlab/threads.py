"""How many CPU threads torch should use.

On a 2-core machine, two threads make a training step about 1.75x faster when the machine
is idle, but several times slower when another process holds a core: OpenMP threads then
wait for a core that is busy. So ffnlab uses the cores that are idle when it starts
(`FFNLAB_THREADS` overrides), decided once per process; the processes torchrun starts on one
node (`LOCAL_WORLD_SIZE`) share them out. Idle is measured over a quarter of a second from
/proc/stat, not by the 1-minute load average: that still counts work just finished (e.g. the
venv `make study` has just built) and would leave an idle core unused for the whole run.
"""

from __future__ import annotations

import functools
import os
import time

from ffnlab.errors import FFNLabError


def cpu_times(stat: str = "/proc/stat") -> tuple[int, int]:
    """(all ticks, idle ticks) so far, from the aggregate "cpu" line of /proc/stat."""
    with open(stat) as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already counted in user)
    return sum(fields[:8]), fields[3] + (fields[4] if len(fields) > 4 else 0)


def busy_cores(window: float = 0.25) -> float | None:
    """How many of the machine's cores were busy over the last `window` seconds (None where
    /proc/stat cannot be read, e.g. not Linux)."""
    try:
        total0, idle0 = cpu_times()
        time.sleep(window)
        total1, idle1 = cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


@functools.cache
def default_threads() -> int:
    """`$FFNLAB_THREADS`, else the number of cores minus those busy now (at least 1)."""
    env = os.environ.get("FFNLAB_THREADS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise FFNLabError(f"FFNLAB_THREADS must be a positive integer, got {env!r}")
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(cores, round(cores - busy)) // per_node)
