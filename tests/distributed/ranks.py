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
from ffnlab.train import TrainConfig, TrainResult, train

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


class Counting:
    """A synthetic task that a tiny model learns in a few steps: each row counts up from a random
    token (mod the vocabulary), with one random token in four. Batches are pure functions of (split, index, seed), as `ffnlab.train` requires;
    `crash_at` raises when asked for that training batch (a process killed mid-run)."""

    vocab_size, fingerprint = 32, "counting-v1"

    def __init__(self, crash_at: int | None = None):
        self.crash_at = crash_at

    def batch(self, split: str, index: int, batch_size: int, seq_len: int, seed: int):
        if split == "train" and index == self.crash_at:
            raise Crashed
        g = torch.Generator().manual_seed(seed * 1_000_003 + 2 * index + (split != "train"))
        start = torch.randint(self.vocab_size, (batch_size, 1), generator=g)
        rows = (start + torch.arange(seq_len + 1)) % self.vocab_size
        noise = torch.rand(rows.shape, generator=g) < 0.25
        rows = torch.where(noise, torch.randint(self.vocab_size, rows.shape, generator=g), rows)
        return rows[:, :-1], rows[:, 1:]


class Crashed(Exception):
    pass


MODEL = preset("tiny", n_layers=2, vocab_size=32, max_seq_len=32, ffn=FFNConfig(kind="mlp", d_ff=64))
TRAIN = TrainConfig(steps=6, batch_size=4, seq_len=16, lr=1e-2, warmup=1, eval_every=1, eval_batches=3,
                    checkpoint_every=3, precision="fp32", seed=0)


def reference_train(out: Path, crash_at: int | None = None) -> TrainResult:
    return train(MODEL, TRAIN, Counting(crash_at), out, progress=False, device="cpu")


def training(out: Path, crashed: Path | None = None) -> None:
    """A whole run into `out`; with `crashed`, also a run that dies in step 4 (after the step-3 checkpoint)."""
    reference_train(out)
    if crashed is not None:
        try:
            reference_train(crashed, crash_at=3)
        except Crashed:
            pass


def memories(out: Path, resume: Path | None = None) -> None:
    stats = reference_stats(NeuronStats.load(resume) if resume else None)
    if dist.is_main():
        stats.save(out)


def reference_fits(calibrate: bool = False) -> dict:
    """The ladder's fit statistics of both layers over the stream's windows (batches of 3; 7 batches,
    the last short: ranks get unequal shares), as {name: tensor}; `calibrate` on the first batch."""
    from ffnlab.analysis.ladder import LadderConfig, fit_layers

    model = tiny_model()
    with torch.no_grad():  # one neuron writing 100x: some outputs pass the massive bar
        model.blocks[1].ffn.fc_out.weight[:, 0] *= 100
    windows = stream()[: 20 * SEQ_LEN].view(20, SEQ_LEN)
    batches = list(windows.split(BATCH))
    fits, _ = fit_layers(model, batches, [0, 1], LadderConfig(), coact=True, transcoders=False,
                         calibrate=batches[0] if calibrate else None)
    return {f"{i}.{k}": v for i, fit in fits.items() for k, v in fit.state_dict().items()}


def ladder_fits(out: Path) -> None:
    from safetensors.torch import save_file

    fits = reference_fits()
    if dist.is_main():
        save_file({**fits, "world": torch.tensor(dist.world())}, str(out))


def main(task: str, out: str, *rest: str) -> None:
    torch.set_num_threads(1)
    with dist.process_group("cpu"):
        if task == "memories":
            memories(Path(out), Path(rest[0]) if rest else None)
        elif task == "ladder":
            ladder_fits(Path(out))
        elif task == "train":
            training(Path(out), Path(rest[0]) if rest else None)
        else:
            raise SystemExit(f"unknown task {task}")


if __name__ == "__main__":
    main(*sys.argv[1:])
