"""What each rank runs in the multi-process tests: `torchrun --nproc-per-node N ranks.py TASK OUT [...]`.

Tasks build their tiny model and data from fixed seeds, exactly as the tests' single-process
references do (`reference_*` below), so the two can be compared.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ffnlab import distributed as dist
from ffnlab.analysis.neurons import NeuronStats, StatsConfig, neuron_stats
from ffnlab.model import FFNConfig, Transformer, preset

STATS = StatsConfig(k=6, threshold=0.05, bins=16)
SEQ_LEN, BATCH = 16, 3


def tiny_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(preset("tiny", n_layers=2, ffn=FFNConfig(kind="swiglu", d_ff=48))).eval()


def stream() -> torch.Tensor:
    """A stream with repeats (equal activations tie in the top-k) and 23 windows (a short last batch)."""
    g = torch.Generator().manual_seed(3)
    return torch.randint(40, (23 * SEQ_LEN + 5,), generator=g)


def reference_stats(resume: NeuronStats | None = None, checkpoint=None) -> NeuronStats:
    return neuron_stats(tiny_model(), stream(), SEQ_LEN, BATCH, STATS, dtype=None, progress=False, resume=resume,
                        checkpoint=checkpoint, checkpoint_every=2)


def memories(out: Path, resume: Path | None = None) -> None:
    stats = reference_stats(NeuronStats.load(resume) if resume else None)
    if dist.is_main():
        stats.save(out)


def main(task: str, out: str, *rest: str) -> None:
    torch.set_num_threads(1)
    with dist.process_group("cpu"):
        if task == "memories":
            memories(Path(out), Path(rest[0]) if rest else None)
        else:
            raise SystemExit(f"unknown task {task}")


if __name__ == "__main__":
    main(*sys.argv[1:])
