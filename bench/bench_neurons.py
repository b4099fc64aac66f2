"""Streaming neuron statistics vs caching activations, as users of hook libraries do today.

Same model (SmolLM2-135M, bf16 autocast, one thread), same tokens, three ways:

- streaming: `ffnlab.analysis.neurons.neuron_stats` (top-k, mean/var, sparsity, histograms);
- ffn-cache: cache only the FFN activations of every token (TransformerLens'
  `run_with_cache(names_filter=...)`), then an exact top-k, mean and variance;
- all-cache: cache every hook point (`run_with_cache()` without a filter: residuals, attention
  patterns, so eager attention, FFN in/out ...), then the same;
- tl-defaults: all-cache in float32, TransformerLens' default dtype (a different precision: a
  reference for what users get out of the box, not an equal-precision comparison). It also
  gives the float32 top-k that the bf16 streaming top-k is checked against (overlap).

Each (method, N) runs in fresh subprocesses: `repeats` timing runs with the default allocator
(their median is reported), and one memory run with glibc's mmap threshold pinned, so freed
buffers go back to the OS and the peak RSS growth (sampled every 5 ms) measures what is held.
Why two kinds: pinned, every large temporary is a fresh mmap and the pass runs ~1.7x slower
(measured); unpinned, glibc keeps freed buffers and RSS varied by a GB between identical runs.
Target: streaming >= 3x faster than a cache at equal tokens, its peak memory flat in N.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

MODEL = "smollm2"
SEQ_LEN, BATCH, K = 128, 8, 25
TARGET_SPEEDUP = 3.0
METHODS = ("streaming", "ffn-cache", "all-cache", "tl-defaults")


def cached_stats(model, tokens: torch.Tensor, names: list[str],
                 bf16: bool = True) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Cache `names` for every token (a full forward), then each layer's exact top-k, mean and variance."""
    from ffnlab.model.hooks import capture
    from ffnlab.model.names import block_hook

    post = [block_hook(i, "ffn.hook_post") for i in range(model.n_layers)]
    batches = tokens[: len(tokens) // SEQ_LEN * SEQ_LEN].view(-1, SEQ_LEN)
    with torch.inference_mode(), capture(model, names) as cache:
        for start in range(0, len(batches), BATCH):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(batches[start:start + BATCH])
        out = []
        for name in post:
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


def child(method: str, n: int, save: str | None = None) -> None:
    """Run one method in this (fresh) process; print seconds and peak RSS growth as JSON, and
    write the top-k indices (layers, F, K) to `save` (.npy) if given."""
    from ffnlab.analysis.neurons import StatsConfig, neuron_stats
    from ffnlab.model.names import block_hook
    from ffnlab.open import open_model

    torch.set_num_threads(1)
    opened = open_model(MODEL, progress=False)
    model, tokens = opened.model, opened.tokens_of(None, n)
    if method == "tl-defaults":
        model.float()
    warm = tokens[:SEQ_LEN].view(1, SEQ_LEN)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(warm)
    names = {"ffn-cache": [block_hook(i, "ffn.hook_post") for i in range(model.n_layers)],
             "all-cache": list(model.hook_sites()), "tl-defaults": list(model.hook_sites())}.get(method)
    with _RSSPeak() as rss:
        t0 = time.perf_counter()
        if method == "streaming":
            stats = neuron_stats(model, tokens, SEQ_LEN, BATCH, StatsConfig(k=K), progress=False)
            state, top = stats.state_bytes(), [layer.top_index for layer in stats.layers]
        else:
            out = cached_stats(model, tokens, names, bf16=method != "tl-defaults")
            state, top = None, [t.T for t, _, _ in out]
        seconds = time.perf_counter() - t0
    if save:
        import numpy as np

        np.save(save, torch.stack(top).numpy().astype(np.int32))
    print(json.dumps({"seconds": seconds, "rss_growth": rss.growth, "state_bytes": state,
                      "tokens": len(tokens) // SEQ_LEN * SEQ_LEN}))


def _spawn(method: str, n: int, save: str | None = None, pinned: bool = False) -> dict:
    root = Path(__file__).resolve().parents[1]
    code = f"from bench.bench_neurons import child; child({method!r}, {n}, {save!r})"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if pinned:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench child {method} {n} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_run(method: str, n: int, repeats: int, save: str | None = None) -> dict:
    runs = [_spawn(method, n, save if i == 0 else None) for i in range(repeats)]
    memory = _spawn(method, n, pinned=True)
    return {"tokens": runs[0]["tokens"], "state_bytes": runs[0]["state_bytes"], "runs": runs, "memory_run": memory,
            "seconds": statistics.median(r["seconds"] for r in runs), "rss_growth": memory["rss_growth"]}


def _overlap(a: str, b: str) -> float:
    """Mean share of a neuron's top-k token positions found by both runs."""
    import numpy as np

    x, y = np.load(a), np.load(b)  # (layers, F, K)
    same = (x[..., :, None] == y[..., None, :]).any(-1)
    return float(same.mean())


def run(quick: bool = True) -> dict:
    import tempfile

    # the caches of every hook point hold ~0.5 MB (bf16) / 1 MB (fp32) per token: sizes that fit in RAM
    sizes, all_cache_max, repeats = ((2048, 8192), 8192, 3) if quick else ((2048, 8192, 32768), 8192, 3)
    rows, raw, overlap = [], {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            saves = {m: f"{tmp}/{m}-{n}.npy" for m in ("streaming", "tl-defaults")}
            raw[n] = {m: _median_run(m, n, repeats, saves.get(m)) for m in METHODS
                      if m in ("streaming", "ffn-cache") or n <= all_cache_max}
            if overlap is None:
                overlap = _overlap(saves["streaming"], saves["tl-defaults"])
            base = raw[n]["streaming"]
            row = [base["tokens"]]
            row += [base["tokens"] / raw[n][m]["seconds"] if m in raw[n] else "-" for m in METHODS]
            row += [raw[n][m]["seconds"] / base["seconds"] if m in raw[n] else "-" for m in METHODS[1:]]
            row += [raw[n][m]["rss_growth"] / 2**20 if m in raw[n] else "-" for m in METHODS]
            rows.append([*row, base["state_bytes"] / 2**20])
    speedups = {m: [r[1 + len(METHODS) + i] for r in rows if r[1 + len(METHODS) + i] != "-"]
                for i, m in enumerate(METHODS[1:])}
    stream_mem = [r[1 + 2 * len(METHODS) - 1] for r in rows]
    vs_ffn = speedups["ffn-cache"]
    notes = [f"speed-up >= {TARGET_SPEEDUP}x at equal precision (vs ffn-cache): "
             f"{'yes' if min(vs_ffn) >= TARGET_SPEEDUP else 'no'} (min {min(vs_ffn):.2f}x); vs all-cache min "
             f"{min(speedups['all-cache']):.2f}x; vs TransformerLens defaults (fp32) min "
             f"{min(speedups['tl-defaults']):.2f}x",
             f"streaming peak RSS growth {stream_mem[0]:.0f} -> {stream_mem[-1]:.0f} MiB "
             f"over a {sizes[-1] // sizes[0]}x token increase; the caches grow with N",
             f"bf16 streaming top-{K} vs float32 exact top-{K} ({sizes[0]} tokens): {100 * overlap:.1f}% of "
             "trigger positions shared"]
    return {"model": MODEL, "seq_len": SEQ_LEN, "batch": BATCH, "k": K, "repeats": repeats, "raw": raw,
            "speedups": speedups, "topk_overlap_bf16_vs_fp32": overlap,
            "within_target": min(vs_ffn) >= TARGET_SPEEDUP and stream_mem[-1] < stream_mem[0] + 64,
            "notes": notes,
            "tables": [{"title": f"streaming statistics vs activation caches (SmolLM2-135M, 1 thread, "
                                 f"tok/s: median of {repeats}; peak: pinned-mmap run)",
                        "columns": ["tokens", *[f"{m} tok/s" for m in METHODS], *[f"vs {m}" for m in METHODS[1:]],
                                    *[f"{m} peak MiB" for m in METHODS], "state MiB"],
                        "rows": rows}]}
