"""Streaming neuron statistics vs a full activation cache (TransformerLens' run_with_cache, then top-k).

Same model (SmolLM2-135M, bf16 autocast, one thread), same tokens: tokens/s and the peak RSS
growth during the pass (sampled every 5 ms) in a fresh subprocess per (method, N), so one run's
allocations cannot hide another's.
Target: the streaming pass >= 3x faster at equal tokens, its peak memory flat in N.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

MODEL = "smollm2"
SEQ_LEN, BATCH, K = 128, 8, 25
TARGET_SPEEDUP = 3.0


def _tokens(n: int) -> torch.Tensor:
    from ffnlab.experiments.c7_memories import open_model

    return open_model(MODEL, progress=False).tokens_of(None, n)


def full_cache(model, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cache every neuron's activation for every token (a full forward), then exact top-k, mean, var."""
    from ffnlab.model.hooks import capture

    names = [f"blocks.{i}.ffn.hook_post" for i in range(model.n_layers)]
    batches = tokens[: len(tokens) // SEQ_LEN * SEQ_LEN].view(-1, SEQ_LEN)
    with torch.inference_mode(), capture(model, names) as cache:
        for start in range(0, len(batches), BATCH):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(batches[start:start + BATCH])
        out = []
        for name in names:
            acts = cache[name].reshape(-1, cache[name].shape[-1]).float()  # (N, F)
            top = acts.abs().topk(K, dim=0)
            out.append((top.indices, acts.mean(0), acts.var(0)))
    return out


class _RSSPeak:
    """Samples this process's current RSS every 5 ms (ru_maxrss would keep the model loading's peak)."""

    def __enter__(self) -> "_RSSPeak":
        import threading

        self.start, self.peak, self._stop = _rss(), 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(method: str, n: int) -> None:
    """Run one method in this (fresh) process; print seconds and peak RSS growth as JSON."""
    from ffnlab.analysis.neurons import StatsConfig, neuron_stats
    from ffnlab.experiments.c7_memories import open_model

    torch.set_num_threads(1)
    opened = open_model(MODEL, progress=False)
    tokens = opened.tokens_of(None, n)
    warm = tokens[:SEQ_LEN].view(1, SEQ_LEN)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        opened.model(warm)
    with _RSSPeak() as rss:
        t0 = time.perf_counter()
        if method == "streaming":
            stats = neuron_stats(opened.model, tokens, SEQ_LEN, BATCH, StatsConfig(k=K), progress=False)
            state = stats.state_bytes()
        else:
            full_cache(opened.model, tokens)
            state = None
        seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rss_growth": rss.growth, "state_bytes": state,
                      "tokens": len(tokens) // SEQ_LEN * SEQ_LEN}))


def _spawn(method: str, n: int) -> dict:
    root = Path(__file__).resolve().parents[1]
    code = f"from bench.bench_neurons import child; child({method!r}, {n})"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench child {method} {n} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = True) -> dict:
    sizes = (2048, 8192) if quick else (4096, 16384, 32768)
    rows, raw = [], {}
    for n in sizes:
        s, f = _spawn("streaming", n), _spawn("full-cache", n)
        raw[n] = {"streaming": s, "full-cache": f}
        rows.append([s["tokens"], s["tokens"] / s["seconds"], f["tokens"] / f["seconds"], f["seconds"] / s["seconds"],
                     s["rss_growth"] / 2**20, f["rss_growth"] / 2**20, s["state_bytes"] / 2**20])
    speedups = [r[3] for r in rows]
    stream_mem = [r[4] for r in rows]
    notes = [f"speed-up >= {TARGET_SPEEDUP}x: {'yes' if min(speedups) >= TARGET_SPEEDUP else 'no'} "
             f"(min {min(speedups):.2f}x)",
             f"streaming peak RSS growth {stream_mem[0]:.0f} -> {stream_mem[-1]:.0f} MiB over a "
             f"{sizes[-1] // sizes[0]}x token increase; full cache grows with N"]
    return {"model": MODEL, "seq_len": SEQ_LEN, "batch": BATCH, "k": K, "raw": raw, "speedups": speedups,
            "within_target": min(speedups) >= TARGET_SPEEDUP and stream_mem[-1] < stream_mem[0] + 64,
            "notes": notes,
            "tables": [{"title": "streaming statistics vs full activation cache (SmolLM2-135M, 1 thread)",
                        "columns": ["tokens", "streaming tok/s", "full-cache tok/s", "speed-up",
                                    "streaming peak MiB", "full-cache peak MiB", "state MiB"],
                        "rows": rows}]}
