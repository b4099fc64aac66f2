"""The explorer's model-side state: one opened model, its stored neuron statistics, and what the pages
show of them (overview, layer, neuron), computed from the statistics and the model's own weights.

    ex = Explorer.open("smollm2")            # the newest `ffnlab memories` statistics of smollm2
    ex.overview()                            # one row per layer
    ex.layer(3).rows[17]                     # neuron 17's summary (for sorting and searching)
    ex.neuron(3, 17)                         # triggers, histogram, value tokens, similar neurons

Statistics are read once; a layer's value tokens (its F value vectors read through the model's final
norm and head, Geva et al. 2022) are computed the first time a page needs them and kept. Every forward
pass that hooks the model holds `lock`: hooks are registered on the shared model, so two such requests
must not run at once. Reading weights and `unembed` (final norm and head, never hooked here) need no lock,
so neuron pages are not held up behind prompts.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ffnlab.analysis.memories import ValueTokens, layer_value_tokens, value_logits, value_tokens
from ffnlab.analysis.neurons import NeuronStats
from ffnlab.errors import FFNLabError
from ffnlab.explore import stored
from ffnlab.open import Opened, open_model
from ffnlab.results import results_dir

CONTEXT = 12  # tokens of a trigger's prefix shown (as `ffnlab neuron` does)
AFTER = 4  # tokens shown after the trigger, greyed
VALUE_K = 10  # promoted / suppressed tokens shown per value


@dataclass(frozen=True)
class Trigger:
    """One top-activating token in its context: `before` + `token` (highlighted) + `after`."""

    activation: float
    before: str
    token: str
    after: str
    index: int  # global token index in the statistics' stream


@dataclass(frozen=True)
class Histogram:
    """Counts over bins with edges (len(counts) + 1); `label` names the quantity binned."""

    label: str
    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class NeuronRow:
    """One neuron of a layer page: what its table sorts and searches by."""

    index: int
    mean: float
    std: float
    active: float  # share of tokens above the threshold
    top: float  # its largest-|activation| value, signed
    trigger: str  # the token of its top trigger
    context: str  # the top trigger's prefix, for searching
    promotes: list[str]
    suppresses: list[str]


@dataclass(frozen=True)
class LayerRow:
    """One layer of the overview."""

    layer: int
    neurons: int
    active: float  # mean share of tokens a neuron is active on
    dead: int  # neurons never above the threshold
    agreement: float | None  # stored key-value agreement, None when not stored
    ladder: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerView:
    layer: int
    rows: list[NeuronRow]
    histograms: list[Histogram]


@dataclass(frozen=True)
class Similar:
    layer: int
    neuron: int
    score: float  # cosine of the value vectors, or number of shared trigger positions


@dataclass(frozen=True)
class NeuronView:
    layer: int
    neuron: int
    mean: float
    std: float
    active: float
    quantiles: dict[str, float]
    triggers: list[Trigger]
    histogram: Histogram
    promotes: list[tuple[str, float]]  # what the value adds when the neuron fires as its top trigger does
    suppresses: list[tuple[str, float]]
    by_value: list[Similar]
    by_triggers: list[Similar]
    ablations: list[stored.StoredAblation]


class Explorer:
    """An opened model and (optionally) its neuron statistics; `stats_dir` None: no statistics yet."""

    def __init__(self, opened: Opened, stats: NeuronStats | None, stats_dir: Path | None, root: Path):
        self.opened, self.model = opened, opened.model
        self.stats, self.stats_dir, self.root = stats, stats_dir, root
        self.n_layers = self.model.n_layers
        self.widths = [int(self.model.ffn_values(i).shape[0]) for i in range(self.n_layers)]
        self.lock = threading.RLock()  # forward passes with hooks
        self._cache_lock = threading.Lock()  # lazily filled caches, each filled once
        self._values: dict[int, ValueTokens] = {}
        self._unit_values: dict[int, Tensor] = {}
        self._trigger_index: tuple[np.ndarray, np.ndarray] | None = None
        if stats is not None:
            stored.check_stats(stats, stats_dir, opened.name, self.widths, opened.vocab_size)

    @classmethod
    def open(cls, model: str, stats: str | Path | None = None, results: str | Path | None = None,
             device: str = "cpu", progress: bool = True) -> Explorer:
        opened = open_model(model, progress=progress, device=device)
        root = results_dir(results)
        where = stored.find_stats(root, opened.name, stats)
        return cls(opened, NeuronStats.load(where) if where else None, where, root)

    @property
    def name(self) -> str:
        return self.opened.name

    # -- checks ----------------------------------------------------------------------------------
    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise FFNLabError(f"layer {layer} out of range; {self.name} has layers 0..{self.n_layers - 1}")

    def check_neuron(self, layer: int, neuron: int) -> None:
        self.check_layer(layer)
        if not 0 <= neuron < self.widths[layer]:
            raise FFNLabError(f"neuron {neuron} out of range; layer {layer} has neurons 0..{self.widths[layer] - 1}")

    def need_stats(self) -> NeuronStats:
        if self.stats is None:
            raise FFNLabError(f"no neuron statistics for {self.name!r} under {self.root / 'neurons'}; run "
                              f"`ffnlab memories {self.name}` first or pass --stats")
        return self.stats

    # -- overview --------------------------------------------------------------------------------
    def overview(self) -> list[LayerRow]:
        agree = stored.stored_agreement(self.root, self.stats_dir) if self.stats_dir else None
        ladder = stored.stored_ladder(self.root, self.name)
        rows = []
        for i in range(self.n_layers):
            if self.stats is None:
                active, dead = float("nan"), -1
            else:
                s = self.stats.layers[i]
                active, dead = float(s.sparsity.mean()), int((s.above == 0).sum())
            rows.append(LayerRow(i, self.widths[i], active, dead, agree[i] if agree and i < len(agree) else None,
                                 ladder.by_layer.get(i, {}) if ladder else {}))
        return rows

    # -- layer -----------------------------------------------------------------------------------
    def value_tokens(self, layer: int) -> ValueTokens:
        """Every neuron's top promoted and suppressed tokens in `layer` (computed once)."""
        with self._cache_lock:
            if layer not in self._values:
                self._values[layer] = layer_value_tokens(self.model, layer, k=VALUE_K)
            return self._values[layer]

    def layer(self, layer: int) -> LayerView:
        self.check_layer(layer)
        stats = self.need_stats()
        s = stats.layers[layer]
        vt = self.value_tokens(layer)
        sign = torch.sign(s.top_values[:, 0])
        promoted, suppressed = vt.promoted(sign)[:, :3].tolist(), vt.promoted(-sign)[:, :3].tolist()
        decode = self.opened.decode
        rows = []
        mean, std, active = s.mean.tolist(), s.var.sqrt().tolist(), s.sparsity.tolist()
        for f, (top, idx) in enumerate(zip(s.top_values[:, 0].tolist(), s.top_index[:, 0].tolist())):
            ctx, at = stats.context(int(idx), CONTEXT)
            rows.append(NeuronRow(f, mean[f], std[f], active[f], top, decode(ctx[at:at + 1]), decode(ctx[:at]),
                                  [decode([t]) for t in promoted[f]], [decode([t]) for t in suppressed[f]]))
        hists = [_histogram("share of tokens active (%)", [100 * a for a in active], 0.0, 100.0),
                 _histogram("mean activation", mean),
                 _histogram("largest |activation|", [abs(r.top) for r in rows])]
        return LayerView(layer, rows, hists)

    # -- neuron ----------------------------------------------------------------------------------
    def neuron(self, layer: int, neuron: int, n_similar: int = 8) -> NeuronView:
        self.check_neuron(layer, neuron)
        stats = self.need_stats()
        s = stats.layers[layer]
        sign = torch.sign(s.top_values[neuron, :1])
        vt = value_tokens(value_logits(self.model, layer, [neuron]), k=VALUE_K)
        if float(sign) < 0:  # a negative coefficient adds -|m| v: read the value with its sign flipped
            up, up_s, down, down_s = vt.bottom[0], -vt.bottom_scores[0], vt.top[0], -vt.top_scores[0]
        else:
            up, up_s, down, down_s = vt.top[0], vt.top_scores[0], vt.bottom[0], vt.bottom_scores[0]
        decode = self.opened.decode
        qs = [0.01, 0.5, 0.99]
        quant = s.quantiles(qs)[neuron].tolist()
        edges = s.edges.tolist() if s.edges is not None else [0.0, 1.0]
        counts = s.hist[neuron].tolist()
        used = [i for i, c in enumerate(counts) if c] or [0]
        lo, hi = used[0], used[-1] + 1  # why: the stored range is twice the first batch's; most bins are empty
        mine = [a for a in stored.stored_ablations(self.root, self.name) if (layer, neuron) in a.group]
        return NeuronView(
            layer, neuron, float(s.mean[neuron]), float(s.var[neuron]) ** 0.5, float(s.sparsity[neuron]),
            {f"p{round(100 * q)}": v for q, v in zip(qs, quant)},
            [self.trigger(int(i), float(v)) for v, i in zip(s.top_values[neuron].tolist(), s.top_index[neuron].tolist())],
            Histogram("activation", edges[lo:hi + 1], counts[lo:hi]),
            [(decode([t]), float(x)) for t, x in zip(up.tolist(), up_s.tolist())],
            [(decode([t]), float(x)) for t, x in zip(down.tolist(), down_s.tolist())],
            self.similar_by_value(layer, neuron, n_similar), self.similar_by_triggers(layer, neuron, n_similar),
            mine)

    def trigger(self, index: int, activation: float) -> Trigger:
        stats = self.need_stats()
        ctx, at = stats.context(index, CONTEXT)
        end = min((index // stats.seq_len + 1) * stats.seq_len, len(stats.tokens), index + 1 + AFTER)
        decode = self.opened.decode
        return Trigger(activation, decode(ctx[:at]), decode(ctx[at:at + 1]),
                       decode(stats.tokens[index + 1:end].tolist()), index)

    def unit_values(self, layer: int) -> Tensor:
        """The layer's value vectors scaled to unit length (F, D), on the CPU."""
        with self._cache_lock:
            if layer not in self._unit_values:
                v = self.model.ffn_values(layer).detach().float().cpu()
                self._unit_values[layer] = v / v.norm(dim=1, keepdim=True).clamp(min=1e-12)
            return self._unit_values[layer]

    def similar_by_value(self, layer: int, neuron: int, n: int) -> list[Similar]:
        """The neurons of the same layer whose value vectors point the most the same way (cosine)."""
        u = self.unit_values(layer)
        cos = u @ u[neuron]
        cos[neuron] = -2.0
        top = cos.topk(min(n, len(cos) - 1))
        return [Similar(layer, int(i), float(c)) for c, i in zip(top.values, top.indices)]

    def similar_by_triggers(self, layer: int, neuron: int, n: int) -> list[Similar]:
        """The neurons of any layer that share the most top-trigger tokens (the same stream positions)."""
        stats = self.need_stats()
        with self._cache_lock:
            if self._trigger_index is None:
                flat = torch.cat([s.top_index.flatten() for s in stats.layers]).numpy()
                order = np.argsort(flat, kind="stable")
                self._trigger_index = flat[order], order
        sorted_idx, order = self._trigger_index
        k = stats.layers[0].top_index.shape[1]
        offsets = np.cumsum([0] + self.widths)
        me = offsets[layer] + neuron
        shared: Counter[int] = Counter()
        for idx in set(stats.layers[layer].top_index[neuron].tolist()):
            lo, hi = np.searchsorted(sorted_idx, idx, "left"), np.searchsorted(sorted_idx, idx, "right")
            shared.update({int(o) // k for o in order[lo:hi]} - {me})
        out = []
        for gid, count in shared.most_common(n):
            owner = int(np.searchsorted(offsets, gid, "right") - 1)
            out.append(Similar(owner, gid - int(offsets[owner]), float(count)))
        return out

    def export_picks(self, per_layer: int) -> list[tuple[int, int]]:
        """Per layer, the `per_layer` neurons with the largest top |activation| (a static export's default)."""
        stats = self.need_stats()
        picks = []
        for i, s in enumerate(stats.layers):
            top = s.top_values[:, 0].abs().topk(min(per_layer, s.n_neurons)).indices
            picks += [(i, int(f)) for f in top.sort().values]
        return picks


def _histogram(label: str, values: list[float], lo: float | None = None, hi: float | None = None,
               bins: int = 30) -> Histogram:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    lo = float(arr.min()) if lo is None and arr.size else (lo or 0.0)
    hi = float(arr.max()) if hi is None and arr.size else (hi if hi is not None else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(arr, bins=bins, range=(lo, hi))
    return Histogram(label, edges.tolist(), counts.tolist())
