"""Dataset-wide statistics of every FFN neuron in one streaming pass (Geva et al. 2021, §3).

For each neuron of each layer (`blocks.{i}.ffn.hook_post`) over N tokens:

- the top-k activating tokens (Geva et al.'s "trigger examples"), ranked by |activation|
  with the sign kept (a gated FFN's coefficient can be negative), stored as global token
  indices into the token stream, not as text;
- mean and variance (Chan et al.'s parallel merge of Welford statistics);
- the fraction of tokens where the activation is above a threshold (sparsity);
- a fixed-bin histogram per neuron, from which quantiles are read.

Each batch is folded into the running state inside the hook (`capture(..., reduce=...)`),
so no activation outlives its batch: memory is O(layers x neurons x (k + bins)), whatever N.
"""

from __future__ import annotations

import ctypes
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ffnlab.device import module_device
from ffnlab.errors import FFNLabError
from ffnlab.model.hooks import Hooked, capture
from ffnlab.model.names import block_hook
from ffnlab.results import atomic_dir, atomic_write_bytes, atomic_write_text, previous_dir


@dataclass(frozen=True)
class StatsConfig:
    """k trigger tokens per neuron; `threshold` for sparsity; `bins` histogram bins per neuron.

    The histogram of layer i spans +-`range_mult` x the largest |activation| of the first batch
    (values outside land in the end bins, so quantiles there are clipped, not lost).
    """

    k: int = 25
    threshold: float = 0.0
    bins: int = 64
    range_mult: float = 2.0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise FFNLabError(f"top-k must be at least 1, got {self.k}")
        if self.bins < 2:
            raise FFNLabError(f"histogram bins must be at least 2, got {self.bins}")
        if self.range_mult <= 0:
            raise FFNLabError(f"range_mult must be positive, got {self.range_mult}")


class LayerStats:
    """Running statistics of one layer's F neurons. Feed (N, F) activations with `update`."""

    def __init__(self, n_neurons: int, cfg: StatsConfig):
        f, k = n_neurons, cfg.k
        self.cfg = cfg
        self.count = 0
        self.top_values = torch.zeros(f, 0)  # (F, <=k) signed, sorted by |value| descending
        self.top_index = torch.zeros(f, 0, dtype=torch.long)  # (F, <=k) global token indices
        self.mean = torch.zeros(f, dtype=torch.float64)
        self.m2 = torch.zeros(f, dtype=torch.float64)  # sum of squared deviations
        self.above = torch.zeros(f, dtype=torch.long)
        self.hist = torch.zeros(f, cfg.bins, dtype=torch.long)
        self.edges: Tensor | None = None  # (bins + 1,) fixed after the first batch
        self.k = k

    @property
    def n_neurons(self) -> int:
        return self.mean.shape[0]

    def update(self, acts: Tensor, index: Tensor) -> None:
        """Fold in activations (N, F) of the tokens with global indices `index` (N,)."""
        acts = acts.float()
        n = acts.shape[0]
        if n == 0:
            return
        self._merge_top(acts, index)
        # mean / M2: the batch's in float32, merged into the running ones in float64 (Chan et al.)
        b_mean = acts.mean(0)
        b_m2 = (acts - b_mean).square_().sum(0).double()
        total = self.count + n
        delta = b_mean.double() - self.mean
        self.mean += delta * (n / total)
        self.m2 += b_m2 + delta ** 2 * (self.count * n / total)
        self.count = total
        self.above += (acts > self.cfg.threshold).sum(0)
        # histogram: one bincount over (neuron, bin) pairs
        if self.edges is None:
            # why: a fixed range keeps histograms mergeable across batches and runs
            span = float(acts.abs().max()) * self.cfg.range_mult or 1.0
            self.edges = torch.linspace(-span, span, self.cfg.bins + 1)
        lo, hi, nb = float(self.edges[0]), float(self.edges[-1]), self.cfg.bins
        # int32 bin ids: half the memory traffic of int64, twice as fast (F x bins < 2^31)
        bins = (acts - lo).mul_(nb / (hi - lo)).clamp_(0, nb - 1).to(torch.int32)  # (N, F)
        bins += torch.arange(self.n_neurons, dtype=torch.int32) * nb
        self.hist += torch.bincount(bins.view(-1), minlength=self.n_neurons * nb).view_as(self.hist)

    def _merge_top(self, acts: Tensor, index: Tensor) -> None:
        """Merge the batch's top-k by |activation| into the state's (F, k), sorted by |value| descending."""
        absa = acts.abs()
        if self.top_values.shape[1] < self.k:  # the first batch(es): a plain top-k per neuron
            _, rows = absa.topk(min(self.k, acts.shape[0]), dim=0)  # (k_b, F)
            cand_val = torch.cat([self.top_values, acts.gather(0, rows).T], dim=1)
            cand_idx = torch.cat([self.top_index, index[rows].T], dim=1)
            keep = cand_val.abs().topk(min(self.k, cand_val.shape[1]), dim=1).indices
            self.top_values, self.top_index = cand_val.gather(1, keep), cand_idx.gather(1, keep)
            return
        # why: a per-neuron top-k over the batch is ~20 ms per layer on one core, most of it
        # per-column overhead; once the state is full only activations above a neuron's k-th
        # best can enter (on average k x batch / tokens seen of them), so find those, sort
        # them, and merge two sorted lists per neuron (measured: 21 ms on the second batch,
        # 12 ms from the fifth on, and falling as N grows)
        row, col = (absa > self.top_values[:, -1].abs()).nonzero(as_tuple=True)
        if row.numel() == 0:
            return
        val, idx = acts[row, col], index[row]
        mag = val.abs()
        order = (col.double() + 1.0 / (1.0 + mag.double())).argsort()  # by neuron, then |value| desc
        col, val, idx, mag = col[order], val[order], idx[order], mag[order]
        cols, counts = torch.unique_consecutive(col, return_counts=True)
        slot = torch.repeat_interleave(torch.arange(len(cols)), counts)
        rank = torch.arange(len(col)) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        m = int(counts.max())
        new_key = torch.full((len(cols), m), float("inf"))  # -|value|, ascending; padding sorts last
        new_key[slot, rank] = -mag
        old_val, old_idx = self.top_values[cols], self.top_index[cols]
        old_key = -old_val.abs()
        # final rank of each element in the merged list (ties: the kept, earlier token first)
        pos_new = torch.searchsorted(old_key, new_key, right=True) + torch.arange(m)
        pos_old = torch.searchsorted(new_key, old_key) + torch.arange(self.k)
        out_val, out_idx = torch.empty_like(old_val), torch.empty_like(old_idx)
        keep = pos_old < self.k
        at = (torch.arange(len(cols))[:, None].expand_as(pos_old)[keep], pos_old[keep])
        out_val[at], out_idx[at] = old_val[keep], old_idx[keep]
        p = pos_new[slot, rank]
        keep = p < self.k
        at = (slot[keep], p[keep])
        out_val[at], out_idx[at] = val[keep], idx[keep]
        self.top_values[cols], self.top_index[cols] = out_val, out_idx

    @property
    def var(self) -> Tensor:
        """Population variance per neuron (F,)."""
        return self.m2 / max(self.count, 1)

    @property
    def sparsity(self) -> Tensor:
        """Fraction of tokens with activation > threshold, per neuron (F,)."""
        return self.above.double() / max(self.count, 1)

    def quantiles(self, qs: list[float] | Tensor) -> Tensor:
        """Approximate quantiles (F, len(qs)), linear inside the histogram bin."""
        qs = torch.as_tensor(qs, dtype=torch.float64)
        if self.edges is None:
            return torch.full((self.n_neurons, len(qs)), float("nan"))
        cdf = self.hist.double().cumsum(1) / self.hist.sum(1, keepdim=True).clamp(min=1)  # (F, bins)
        out = torch.empty(self.n_neurons, len(qs), dtype=torch.float64)
        width = (self.edges[1] - self.edges[0]).double()
        for j, q in enumerate(qs):
            b = torch.searchsorted(cdf, torch.full((self.n_neurons, 1), float(q), dtype=torch.float64)).clamp(
                max=self.cfg.bins - 1).squeeze(1)
            below = torch.where(b > 0, cdf.gather(1, (b - 1).clamp(min=0)[:, None]).squeeze(1), torch.zeros(()))
            inside = cdf.gather(1, b[:, None]).squeeze(1) - below
            frac = ((q - below) / inside.clamp(min=1e-12)).clamp(0, 1)
            out[:, j] = self.edges[0].double() + (b.double() + frac) * width
        return out

    def state_bytes(self) -> int:
        """Bytes the running state holds (it does not depend on the number of tokens)."""
        tensors = [self.top_values, self.top_index, self.mean, self.m2, self.above, self.hist]
        return sum(t.numel() * t.element_size() for t in tensors)

    # -- persistence: one .npz per layer ---------------------------------------------------
    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        edges = self.edges if self.edges is not None else torch.zeros(self.cfg.bins + 1)
        np.savez(buf, top_values=self.top_values.numpy().astype(np.float32),
                 top_index=self.top_index.numpy().astype(np.int64), mean=self.mean.numpy(), m2=self.m2.numpy(),
                 above=self.above.numpy(), hist=self.hist.numpy().astype(np.int64), edges=edges.numpy(),
                 count=np.int64(self.count), has_edges=np.bool_(self.edges is not None))
        return buf.getvalue()

    @classmethod
    def from_npz(cls, path: str | Path, cfg: StatsConfig) -> LayerStats:
        with np.load(path) as z:
            s = cls(z["mean"].shape[0], cfg)
            s.top_values, s.top_index = torch.from_numpy(z["top_values"]), torch.from_numpy(z["top_index"])
            s.mean, s.m2 = torch.from_numpy(z["mean"]), torch.from_numpy(z["m2"])
            s.above, s.hist = torch.from_numpy(z["above"]), torch.from_numpy(z["hist"])
            s.edges = torch.from_numpy(z["edges"]) if bool(z["has_edges"]) else None
            s.count = int(z["count"])
        return s


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc only).

    Why: glibc keeps the per-batch buffers it frees in a fragmented heap, so without this the
    process's RSS creeps up with N although nothing is kept (measured: +120 MB per 64k tokens).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Stop(Exception):
    """Raised by the last layer's hook: nothing after it is needed for the statistics."""


@dataclass
class NeuronStats:
    """Statistics of every layer; `tokens` is the (flattened) stream the indices point into."""

    cfg: StatsConfig
    layers: list[LayerStats]
    tokens: Tensor  # (N_total,) int token ids of the stream, N_total >= count
    seq_len: int  # windows of this length were cut from `tokens` (index // seq_len = window)

    @property
    def count(self) -> int:
        return self.layers[0].count if self.layers else 0

    def state_bytes(self) -> int:
        return sum(layer.state_bytes() for layer in self.layers)

    def context(self, index: int, width: int = 12) -> tuple[list[int], int]:
        """The tokens of the trigger's prefix inside its window, and the trigger's offset in it."""
        start = max(index - width + 1, (index // self.seq_len) * self.seq_len)
        return self.tokens[start: index + 1].tolist(), index - start

    def next_token(self, index: int) -> int | None:
        """The token after `index` inside its window (None at a window's last position)."""
        if (index + 1) % self.seq_len == 0 or index + 1 >= len(self.tokens):
            return None
        return int(self.tokens[index + 1])

    def save(self, out: str | Path, meta: dict | None = None) -> Path:
        """Write `layer_XX.npz`, `tokens.npy` and `meta.json` as one unit: into a temporary directory
        beside `out`, then renamed into place, so a kill leaves the old whole set or the new one."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise FFNLabError(f"{str(out)!r} is a file; neuron statistics go in a directory")
        if out.is_dir() and not (out / "meta.json").exists() and any(out.iterdir()):
            raise FFNLabError(f"{str(out)!r} holds files that are not neuron statistics; choose another directory")
        with atomic_dir(out) as tmp:
            for i, layer in enumerate(self.layers):
                atomic_write_bytes(tmp / f"layer_{i:02d}.npz", layer.to_npz())
            buf = io.BytesIO()
            np.save(buf, self.tokens.numpy().astype(np.int32))
            atomic_write_bytes(tmp / "tokens.npy", buf.getvalue())
            info = {"config": asdict(self.cfg), "n_layers": len(self.layers), "count": self.count,
                    "seq_len": self.seq_len, "n_neurons": [layer.n_neurons for layer in self.layers], **(meta or {})}
            atomic_write_text(tmp / "meta.json", json.dumps(info, indent=1))
        return out

    @staticmethod
    def saved(out: str | Path) -> Path | None:
        """The directory holding the statistics saved to `out`: `out`, or the previous set if a save
        was killed between its two renames; None if there are none."""
        for d in (Path(out), previous_dir(Path(out))):
            if (d / "meta.json").is_file():
                return d
        return None

    @classmethod
    def load(cls, out: str | Path) -> NeuronStats:
        found = cls.saved(out)
        if found is None:
            raise FFNLabError(f"{out} holds no neuron statistics (no meta.json); run `ffnlab memories` first")
        try:
            info = json.loads((found / "meta.json").read_text())
            cfg = StatsConfig(**info["config"])
            layers = [LayerStats.from_npz(found / f"layer_{i:02d}.npz", cfg) for i in range(info["n_layers"])]
            tokens = torch.from_numpy(np.load(found / "tokens.npy").astype(np.int64))
            stats = cls(cfg, layers, tokens, int(info["seq_len"]))
        except FFNLabError:
            raise
        except Exception as err:  # missing or damaged files: OSError, bad JSON, zip or key errors
            raise FFNLabError(f"damaged neuron statistics in {str(found)!r}: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None
        counts = [layer.count for layer in layers]
        if len(set(counts + [info["count"]])) > 1:
            raise FFNLabError(f"damaged neuron statistics in {str(found)!r}: layers hold different token counts "
                              f"{counts} (meta.json: {info['count']}); delete the directory and run again")
        return stats


def windows(tokens: Tensor, seq_len: int, batch_size: int, first: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """Cut a 1-D stream into non-overlapping windows, from window `first` on;
    yield ((B, T) batch, (B*T,) global token indices)."""
    n_win = len(tokens) // seq_len
    for start in range(first, n_win, batch_size):
        stop = min(start + batch_size, n_win)
        batch = tokens[start * seq_len: stop * seq_len].view(stop - start, seq_len)
        yield batch, torch.arange(start * seq_len, stop * seq_len)


def neuron_stats(model: Hooked, tokens: Tensor, seq_len: int = 128, batch_size: int = 8,
                 cfg: StatsConfig = StatsConfig(), dtype: torch.dtype | None = torch.bfloat16,
                 progress: bool = True, resume: NeuronStats | None = None,
                 checkpoint: callable | None = None, checkpoint_every: int = 50) -> NeuronStats:
    """One pass over `tokens` (1-D), folding every layer's `ffn.hook_post` into `NeuronStats`.

    `dtype` runs the forward under autocast (bf16 is fast on AMX and GPUs; the statistics are
    float32/float64, kept on the CPU whatever device the model is on). `resume` continues a saved
    partial pass; `checkpoint(stats)` is called every `checkpoint_every` batches so an interrupted
    pass loses little.
    """
    from tqdm import tqdm

    tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
    n_win = len(tokens) // seq_len
    if n_win == 0:
        raise FFNLabError(f"need at least {seq_len} tokens for one window, got {len(tokens)}")
    names = [block_hook(i, "ffn.hook_post") for i in range(model.n_layers)]
    stats = resume if resume is not None else NeuronStats(cfg, [], tokens, seq_len)
    done = stats.count
    current: dict[str, Tensor] = {}

    def fold(name: str, act: Tensor) -> Tensor:
        layer = names.index(name)
        if layer == len(stats.layers):
            stats.layers.append(LayerStats(act.shape[-1], stats.cfg))
        stats.layers[layer].update(act.reshape(-1, act.shape[-1]).cpu(), current["index"])
        if layer == len(names) - 1:
            raise _Stop  # why: the rest of the network (and the V-wide head) is not needed
        return act.new_zeros(())

    bar = tqdm(total=n_win * seq_len, initial=done, unit="tok", unit_scale=True, desc="neuron stats",
               disable=not progress, dynamic_ncols=True)
    device = module_device(model)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None and device.type in ("cpu", "cuda"))
    with torch.inference_mode(), capture(model, names, reduce=fold, device=None):
        # a resumed pass starts at the first window it has not folded in
        for step, (batch, index) in enumerate(windows(tokens, seq_len, batch_size, first=done // seq_len)):
            current["index"] = index
            try:
                with autocast:
                    model.forward(batch.to(device))
            except _Stop:
                pass
            bar.update(index.numel())
            if step % 8 == 7:
                _trim_heap()
            if checkpoint is not None and (step + 1) % checkpoint_every == 0:
                checkpoint(stats)
    bar.close()
    return stats
