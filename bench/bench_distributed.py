"""Throughput of N processes against one, on this machine: DDP training and sharded neuron statistics.

Each configuration runs in fresh processes through torchrun's engine (`torch.distributed.run
--standalone`, gloo on the CPU): one process with one thread, one process with two threads, two
processes with one thread each. Training: the `small` preset on the packaged corpus (char
tokens), tokens/s of the training steps as rank 0 records them (evaluation excluded).
Statistics: the GPT-2-layout checkpoint of `bench_neurons_overhead`, tokens/s of `neuron_stats`
after a warm-up pass. Timings on a shared machine vary with its load: the ratios are what to read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CONFIGS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1))
ROOT = Path(__file__).resolve().parents[1]


def worker(task: str, out: str, size: str) -> None:
    """One rank's part (run under torchrun); rank 0 writes {"tokens_per_second": ...} to `out`."""
    from ffnlab import distributed as dist

    with dist.process_group("cpu"):
        tps = _train(int(size)) if task == "train" else _stats(int(size), Path(out).parent / "gpt2")
        if dist.is_main():
            Path(out).write_text(json.dumps({"tokens_per_second": tps, "processes": dist.world()}))


def _train(steps: int) -> float:
    from ffnlab.data import prepare_data
    from ffnlab.model import preset
    from ffnlab.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(None, "char", cache_dir=Path(tmp) / "cache")
        cfg = TrainConfig(steps=steps, batch_size=8, seq_len=128, warmup=2, eval_every=steps, eval_batches=2,
                          checkpoint_every=steps)
        result = train(preset("small", vocab_size=data.vocab_size), cfg, data, Path(tmp) / "run", progress=False,
                       device="cpu")
    return result.tokens_per_second


def _stats(n_tokens: int, where: Path) -> float:
    from bench.bench_neurons_overhead import gpt2_layout
    from ffnlab import distributed as dist
    from ffnlab.analysis.neurons import neuron_stats
    from ffnlab.pretrained import load

    with dist.main_first():  # rank 0 writes the checkpoint, then every rank loads it
        model = gpt2_layout(str(where)) if dist.is_main() else load(where, progress=False)
    tokens = torch.randint(0, 8192, (n_tokens,), generator=torch.Generator().manual_seed(0))
    neuron_stats(model, tokens[:4096], progress=False)  # warm-up
    dist.barrier()
    t0 = time.perf_counter()
    neuron_stats(model, tokens, progress=False)
    return n_tokens / (time.perf_counter() - t0)


def launch(task: str, nproc: int, threads: int, size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {**os.environ, "FFNLAB_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": str(ROOT)}
        code = f"import sys, torch; torch.set_num_threads({threads}); from bench.bench_distributed import worker; " \
               "worker(*sys.argv[1:])"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "--no-python", sys.executable, "-c", code, task, str(out), str(size)]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{task} on {nproc} processes failed:\n{done.stderr[-2000:]}")
        return json.loads(out.read_text())["tokens_per_second"]


def run(quick: bool = True) -> dict:
    sizes = {"train": 12 if quick else 60, "statistics": 32_768 if quick else 131_072}
    out: dict = {"load_average": os.getloadavg()[0], "cores": os.cpu_count(), "sizes": sizes, "rows": {}}
    rows = []
    for task, size in sizes.items():
        base = None
        for label, nproc, threads in CONFIGS:
            tps = launch("train" if task == "train" else "stats", nproc, threads, size)
            base = base or tps
            out["rows"][f"{task}: {label}"] = tps
            rows.append([task, label, tps, tps / base])
    out["tables"] = [{"title": f"N processes vs one on this machine ({os.cpu_count()} cores; train: small preset, "
                               f"{sizes['train']} steps of 8 x 128; statistics: GPT-2-layout 6x256, "
                               f"{sizes['statistics']} tokens)",
                      "columns": ["work", "processes x threads", "tok/s", "vs 1 x 1"], "rows": rows}]
    out["notes"] = [f"1-minute load average at the start {out['load_average']:.1f}: on a shared machine two "
                    "processes compete with others for the same cores"]
    return out
