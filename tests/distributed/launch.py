"""Run `ranks.py` in N gloo processes on this machine through torchrun (a free port each time)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RANKS = Path(__file__).with_name("ranks.py")


def torchrun(nproc: int, *args: str, timeout: float = 180) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FFNLAB_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(RANKS),
           *map(str, args)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
