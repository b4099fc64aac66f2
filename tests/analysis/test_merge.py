"""Exact merges: moments (Chan et al.), co-moments, top-k by one total order, whole LayerStats."""

import pytest
import torch

from ffnlab.analysis.merge import EMPTY, merge_comoments, merge_moments, merge_top_k, pad_top_k, top_k_sorted
from ffnlab.analysis.neurons import LayerStats, StatsConfig


def coarse(n: int, f: int, seed: int = 0) -> torch.Tensor:
    """Signed values on a coarse grid: ties everywhere, a dead neuron in column 0."""
    g = torch.Generator().manual_seed(seed)
    acts = (torch.randn(n, f, generator=g, dtype=torch.float64) * 4).round().float() * torch.rand(f, generator=g)
    acts[:, 0] = 0.0
    return acts


@pytest.mark.parametrize("split", [0, 1, 37, 100])
def test_merged_moments_equal_the_moments_of_the_union(split):
    x = torch.randn(100, 5, dtype=torch.float64) * 3 + 7
    a, b = x[:split], x[split:]
    part = lambda t: (len(t), t.mean(0) if len(t) else torch.zeros(5, dtype=torch.float64),  # noqa: E731
                      ((t - t.mean(0)) ** 2).sum(0) if len(t) else torch.zeros(5, dtype=torch.float64))
    n, mean, m2 = merge_moments(*part(a), *part(b))
    assert n == 100
    assert torch.allclose(mean, x.mean(0), rtol=1e-12)
    assert torch.allclose(m2, ((x - x.mean(0)) ** 2).sum(0), rtol=1e-12)


def test_merged_comoments_equal_the_scatter_matrix_of_the_union():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(90, 4, generator=g, dtype=torch.float64) + 2, torch.randn(90, 3, generator=g,
                                                                                dtype=torch.float64) - 1
    parts = []
    for sl in (slice(0, 20), slice(20, 90)):
        xs, ys = x[sl], y[sl]
        parts.append((len(xs), xs.mean(0), ys.mean(0), (xs - xs.mean(0)).T @ (ys - ys.mean(0))))
    n, mx, my, c = merge_comoments(*parts[0], *parts[1])
    assert n == 90 and torch.allclose(mx, x.mean(0)) and torch.allclose(my, y.mean(0))
    assert torch.allclose(c, (x - x.mean(0)).T @ (y - y.mean(0)), rtol=1e-12)


def exact_top(acts: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference order, by brute force: per column, sort (-|value|, index) pairs in Python."""
    values, index = [], []
    for col in acts.T.tolist():
        best = sorted(range(len(col)), key=lambda i: (-abs(col[i]), i))[:k]
        values.append([col[i] for i in best])
        index.append(best)
    return torch.tensor(values), torch.tensor(index)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_streamed_top_k_is_the_brute_force_order(batch):
    acts = coarse(300, 12)
    stats = LayerStats(12, StatsConfig(k=9))
    for start in range(0, len(acts), batch):
        stats.update(acts[start:start + batch], torch.arange(start, min(start + batch, len(acts))))
    values, index = exact_top(acts, 9)
    assert torch.equal(stats.top_index, index) and torch.equal(stats.top_values, values)


def test_the_accelerator_path_keeps_the_same_top_k():
    """`top_k_sorted` + `merge_top_k` (what runs on a GPU, without host reads) on the CPU."""
    acts, k = coarse(300, 12, seed=2), 9
    values, index = torch.zeros(12, 0), torch.zeros(12, 0, dtype=torch.long)
    for start in range(0, 300, 50):
        bv, bi = top_k_sorted(acts[start:start + 50], torch.arange(start, start + 50), k)
        values, index = merge_top_k(values, index, bv, bi, k, drop_empty=False)
    assert torch.equal(index, exact_top(acts, k)[1]) and torch.equal(values, exact_top(acts, k)[0])


def test_padded_lists_merge_without_their_empty_slots():
    a = pad_top_k(torch.tensor([[3.0, -2.0]]), torch.tensor([[5, 1]]), 4)
    assert a[1].tolist() == [[5, 1, EMPTY, EMPTY]]
    values, index = merge_top_k(*a, *pad_top_k(torch.tensor([[-3.0]]), torch.tensor([[0]]), 4), 4)
    assert index.tolist() == [[0, 5, 1]] and values.tolist() == [[-3.0, 3.0, -2.0]]


@pytest.mark.parametrize("parts", [2, 3])
def test_layer_stats_of_interleaved_parts_merge_to_the_whole_stream(parts):
    """Batches dealt round robin to `parts` states (as ranks get them), merged: the single stream's
    top-k bit for bit, moments to float rounding, counts and histograms exactly."""
    acts, cfg, batch = coarse(400, 10, seed=3), StatsConfig(k=7, threshold=0.5, bins=12), 30
    whole = LayerStats(10, cfg)
    shards = [LayerStats(10, cfg) for _ in range(parts)]
    for j, start in enumerate(range(0, 400, batch)):
        block, index = acts[start:start + batch], torch.arange(start, min(start + batch, 400))
        whole.update(block, index)
        if j == 0:
            for s in shards[1:]:
                s.edges = whole.edges  # the first batch's range, as rank 0 sends it
        shards[j % parts].update(block, index)
    merged = LayerStats(10, cfg)
    for s in shards:
        merged.merge(s)
    assert merged.count == whole.count == 400
    assert torch.equal(merged.top_index, whole.top_index) and torch.equal(merged.top_values, whole.top_values)
    assert torch.equal(merged.hist, whole.hist) and torch.equal(merged.above, whole.above)
    assert torch.allclose(merged.mean, whole.mean, rtol=1e-6, atol=1e-9)
    assert torch.allclose(merged.var, whole.var, rtol=1e-6)
    assert torch.allclose(whole.var.float(), acts.var(0, unbiased=False), rtol=1e-5, atol=1e-6)


def test_parts_with_different_histogram_ranges_are_refused():
    from ffnlab.errors import FFNLabError

    a, b = LayerStats(4, StatsConfig(k=2)), LayerStats(4, StatsConfig(k=2))
    a.update(torch.randn(8, 4), torch.arange(8))
    b.update(torch.randn(8, 4) * 10, torch.arange(8, 16))
    with pytest.raises(FFNLabError, match="bin edges"):
        a.merge(b)


def test_a_least_squares_fit_from_merged_shards_equals_the_fit_on_all_rows():
    """What the replacement ladder streams: y ~ W x + b fitted from (co-)moments, merged from three
    shards of rows, equals the fit on all rows at once (numerical rounding apart)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64) * 2 + 1
    y = x @ torch.randn(6, 3, generator=g, dtype=torch.float64) + 0.1 * torch.randn(300, 3, generator=g,
                                                                                   dtype=torch.float64)
    state = (0, torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64),
             torch.zeros(6, 6, dtype=torch.float64))
    fit = (0, torch.zeros(6, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
           torch.zeros(6, 3, dtype=torch.float64))
    for rows in (slice(0, 70), slice(70, 71), slice(71, 300)):
        xs, ys = x[rows], y[rows]
        cx, cy = xs - xs.mean(0), ys - ys.mean(0)
        state = merge_comoments(*state, len(xs), xs.mean(0), xs.mean(0), cx.T @ cx)
        fit = merge_comoments(*fit, len(xs), xs.mean(0), ys.mean(0), cx.T @ cy)
    w = torch.linalg.solve(state[3], fit[3])  # (6, 3)
    b = fit[2] - fit[1] @ w
    design = torch.cat([x, torch.ones(300, 1, dtype=torch.float64)], dim=1)
    exact = torch.linalg.lstsq(design, y).solution
    assert torch.allclose(w, exact[:6], atol=1e-10) and torch.allclose(b, exact[6], atol=1e-10)


def test_the_accelerator_fold_equals_the_cpu_fold(monkeypatch):
    """The GPU way (stable-sort top-k, scatter histogram, no numpy, whole batches), forced on the CPU."""
    import ffnlab.analysis.neurons as neurons

    acts, cfg = coarse(700, 9, seed=5), StatsConfig(k=6, threshold=0.5, bins=10)
    cpu = LayerStats(9, cfg)
    for start in range(0, 700, 64):
        cpu.update(acts[start:start + 64], torch.arange(start, min(start + 64, 700)))
    monkeypatch.setattr(neurons, "_accelerated", lambda t: True)
    gpu = LayerStats(9, cfg)
    for start in range(0, 700, 64):
        gpu.update(acts[start:start + 64], torch.arange(start, min(start + 64, 700)))
    assert torch.equal(gpu.top_index, cpu.top_index) and torch.equal(gpu.top_values, cpu.top_values)
    assert torch.equal(gpu.hist, cpu.hist) and torch.equal(gpu.above, cpu.above)
    # moments: float32 sums in another order (the CPU's one-pass fold sums 64 rows at a time)
    assert torch.allclose(gpu.mean, cpu.mean, rtol=1e-5, atol=1e-6) and torch.allclose(gpu.m2, cpu.m2, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_statistics_on_a_gpu_match_the_cpu():
    from ffnlab.analysis.neurons import neuron_stats
    from ffnlab.model import FFNConfig, Transformer, preset

    torch.manual_seed(0)
    model = Transformer(preset("tiny", n_layers=2, ffn=FFNConfig(kind="swiglu", d_ff=48))).eval()
    stream = torch.randint(256, (40 * 16,), generator=torch.Generator().manual_seed(0))
    cpu = neuron_stats(model, stream, 16, 4, StatsConfig(k=4), dtype=None, progress=False)
    gpu = neuron_stats(model.cuda(), stream, 16, 4, StatsConfig(k=4), dtype=None, progress=False)
    for a, b in zip(cpu.layers, gpu.layers, strict=True):
        assert b.top_index.device.type == "cpu" and b.count == a.count
        assert torch.allclose(a.mean, b.mean, atol=1e-5) and torch.allclose(a.var, b.var, rtol=1e-3, atol=1e-6)
        assert (a.top_index == b.top_index).double().mean() > 0.95  # GPU matmuls round differently
