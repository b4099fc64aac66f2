import subprocess
import sys
import textwrap

import pytest
import torch

from ffnlab.analysis.cpu_fold import fold_full
from ffnlab.analysis.neurons import LayerStats, NeuronStats, StatsConfig, neuron_stats
from ffnlab.results import atomic_write_bytes
from ffnlab.errors import FFNLabError
from ffnlab.model import FFNConfig, Transformer, capture, preset


def tiny(kind: str = "mlp", seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = preset("tiny", n_layers=3, ffn=FFNConfig(kind=kind, activation="gelu", d_ff=96))
    return Transformer(cfg).eval()


def stream(n: int, vocab: int = 256, seed: int = 1) -> torch.Tensor:
    return torch.randint(vocab, (n,), generator=torch.Generator().manual_seed(seed))


def full_capture(model, tokens, seq_len):
    names = [f"blocks.{i}.ffn.hook_post" for i in range(model.n_layers)]
    with torch.no_grad(), capture(model, names) as cache:
        model(tokens[: len(tokens) // seq_len * seq_len].view(-1, seq_len))
    return [cache[n].reshape(-1, cache[n].shape[-1]) for n in names]


@pytest.mark.parametrize("kind", ["mlp", "swiglu"])
def test_streaming_equals_exact_over_a_full_capture(kind):
    model, tokens, seq_len = tiny(kind), stream(1000), 32
    cfg = StatsConfig(k=7, threshold=0.05)
    stats = neuron_stats(model, tokens, seq_len=seq_len, batch_size=3, cfg=cfg, dtype=None, progress=False)
    acts = full_capture(model, tokens, seq_len)
    assert stats.count == 31 * 32
    for layer, a in zip(stats.layers, acts):
        top = a.abs().topk(7, dim=0)
        # equal activations (a window's first token repeats) may tie, so compare values, and check
        # that each stored global index (= row of the flat stream) holds the stored activation
        assert torch.allclose(layer.top_values.abs(), top.values.T, atol=1e-6)
        assert torch.allclose(layer.top_values, a.gather(0, layer.top_index.T).T, atol=1e-6)
        assert all(len(set(row.tolist())) == 7 for row in layer.top_index)
        assert torch.allclose(layer.mean.float(), a.mean(0), atol=1e-5)
        assert torch.allclose(layer.var.float(), a.var(0, unbiased=False), atol=1e-5, rtol=1e-4)
        assert torch.allclose(layer.sparsity.float(), (a > 0.05).float().mean(0), atol=1e-6)
        # quantiles from the histogram sit within one bin of the exact ones
        width = float(layer.edges[1] - layer.edges[0])
        q = layer.quantiles([0.1, 0.5, 0.9]).float()
        exact = a.quantile(torch.tensor([0.1, 0.5, 0.9]), dim=0).T
        assert (q - exact).abs().max() <= width + 1e-6
    if kind == "swiglu":  # gated coefficients are signed: the top-k keeps negative values
        assert any((layer.top_values < 0).any() for layer in stats.layers)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_top_k_merge_is_exact_with_many_ties_and_signs(batch):
    """LayerStats alone, many batches of coarse signed values (ties everywhere): the kept
    |values| equal the exact top-k, sorted descending, and every index holds its value."""
    gen = torch.Generator().manual_seed(0)
    acts = (torch.randn(900, 40, generator=gen) * 4).round() * torch.rand(40, generator=gen)
    acts[:, 0] = 0.0  # a dead neuron: nothing ever beats its k-th best
    stats = LayerStats(40, StatsConfig(k=9))
    for start in range(0, len(acts), batch):
        stats.update(acts[start:start + batch], torch.arange(start, min(start + batch, len(acts))))
    exact = acts.abs().topk(9, dim=0).values.T
    assert torch.equal(stats.top_values.abs(), exact)
    assert torch.equal(stats.top_values, acts.gather(0, stats.top_index.T).T)
    assert all(len(set(row.tolist())) == 9 for row in stats.top_index)


def test_state_size_does_not_grow_with_tokens():
    model = tiny()
    small = neuron_stats(model, stream(320), seq_len=32, cfg=StatsConfig(k=5), progress=False)
    large = neuron_stats(model, stream(3200), seq_len=32, cfg=StatsConfig(k=5), progress=False)
    assert large.count == 10 * small.count
    assert small.state_bytes() == large.state_bytes() == 3 * 96 * (5 * 4 + 5 * 8 + 8 + 8 + 8 + 64 * 8)


def test_peak_memory_does_not_grow_with_tokens():
    """Peak RSS of a subprocess: 8x the tokens costs no more memory (a full cache would cost 8x)."""
    code = textwrap.dedent("""
        import resource, sys, torch
        from ffnlab.analysis.neurons import neuron_stats, StatsConfig
        from ffnlab.model import Transformer, preset, FFNConfig
        torch.manual_seed(0)
        m = Transformer(preset("tiny", d_model=64, n_layers=2, max_seq_len=64,
                               ffn=FFNConfig(kind="mlp", d_ff=512))).eval()
        n = int(sys.argv[1])
        toks = torch.randint(256, (n,))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        neuron_stats(m, toks, seq_len=64, batch_size=16, progress=False)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    grow = {}
    for n in (4096, 32_768):
        out = subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True, check=True)
        grow[n] = int(out.stdout.split()[-1]) * 1024
    # a full cache of 32k tokens x 2 layers x 512 neurons in float32 would be 128 MiB
    assert grow[32_768] < grow[4096] + 16 * 2**20


def test_save_load_round_trip_and_resume(tmp_path):
    model, tokens = tiny(), stream(960)
    whole = neuron_stats(model, tokens, seq_len=32, batch_size=2, cfg=StatsConfig(k=4), dtype=None, progress=False)
    saved = []

    def checkpoint(s):  # keep the first checkpoint only, as if the pass had been killed after it
        if not saved:
            s.save(tmp_path / "part")
            saved.append(s.count)
    neuron_stats(model, tokens, seq_len=32, batch_size=2, cfg=StatsConfig(k=4), dtype=None, progress=False,
                 checkpoint=checkpoint, checkpoint_every=5)
    part = NeuronStats.load(tmp_path / "part")
    assert part.count == saved[0] == 5 * 2 * 32
    resumed = neuron_stats(model, tokens, seq_len=32, batch_size=2, dtype=None, progress=False, resume=part)
    for a, b in zip(whole.layers, resumed.layers):
        assert torch.equal(a.top_index, b.top_index)
        assert torch.allclose(a.mean, b.mean) and torch.allclose(a.m2, b.m2)
        assert torch.equal(a.hist, b.hist)


def test_context_and_next_token_stay_inside_the_window():
    model, tokens = tiny(), stream(128)
    stats = neuron_stats(model, tokens, seq_len=32, cfg=StatsConfig(k=2), progress=False)
    ctx, at = stats.context(33, width=10)
    assert ctx == tokens[32:34].tolist() and at == 1
    assert stats.next_token(31) is None and stats.next_token(30) == int(tokens[31])


def test_too_few_tokens_is_a_user_error():
    with pytest.raises(FFNLabError, match="at least 32 tokens"):
        neuron_stats(tiny(), stream(10), seq_len=32, progress=False)
    with pytest.raises(FFNLabError, match="top-k"):
        StatsConfig(k=0)


def test_a_save_killed_midway_leaves_the_previous_whole_statistics(tmp_path, monkeypatch):
    """Issue 16.3: a kill right after layer_00.npz was rewritten must not mix two passes' layers."""
    import ffnlab.analysis.neurons as neurons

    model, tokens, cfg = tiny(), stream(960), StatsConfig(k=4)
    whole = neuron_stats(model, tokens, seq_len=32, batch_size=2, cfg=cfg, dtype=None, progress=False)
    out, calls = tmp_path / "stats", []

    def killed_after_first_layer(path, data):
        if path.name.startswith("layer_01"):
            raise KeyboardInterrupt  # as if the process died here, after layer_00 was written
        atomic_write_bytes(path, data)

    def checkpoint(s):
        calls.append(s.count)
        if len(calls) == 2:  # the first checkpoint is written whole, the second is killed
            monkeypatch.setattr(neurons, "atomic_write_bytes", killed_after_first_layer)
        s.save(out)
    with pytest.raises(KeyboardInterrupt):
        neuron_stats(model, tokens, seq_len=32, batch_size=2, cfg=cfg, dtype=None, progress=False,
                     checkpoint=checkpoint, checkpoint_every=5)
    monkeypatch.undo()
    part = NeuronStats.load(out)
    assert [layer.count for layer in part.layers] == [5 * 2 * 32] * 3
    resumed = neuron_stats(model, tokens, seq_len=32, batch_size=2, dtype=None, progress=False, resume=part)
    for a, b in zip(whole.layers, resumed.layers):
        assert a.count == b.count == 960
        assert torch.equal(a.top_index, b.top_index) and torch.equal(a.hist, b.hist)
        assert torch.allclose(a.mean, b.mean) and torch.allclose(a.m2, b.m2)
    assert [p.name for p in tmp_path.iterdir()] == ["stats"]  # no temporary directory left


def test_layers_with_different_counts_are_refused(tmp_path):
    model, cfg = tiny(), StatsConfig(k=4)
    short = neuron_stats(model, stream(320), seq_len=32, batch_size=2, cfg=cfg, dtype=None, progress=False)
    long = neuron_stats(model, stream(640), seq_len=32, batch_size=2, cfg=cfg, dtype=None, progress=False)
    short.save(tmp_path / "a")
    (tmp_path / "a" / "layer_00.npz").write_bytes(long.layers[0].to_npz())  # a mix of two passes
    with pytest.raises(FFNLabError, match=r"layers hold different token counts \[640, 320, 320\]"):
        NeuronStats.load(tmp_path / "a")


def test_a_kill_between_the_two_renames_keeps_the_previous_set(tmp_path):
    stats = neuron_stats(tiny(), stream(320), seq_len=32, batch_size=2, cfg=StatsConfig(k=4), dtype=None,
                         progress=False)
    stats.save(tmp_path / "a")
    (tmp_path / "a").rename(tmp_path / ".a.old")  # killed after moving the old set aside
    assert NeuronStats.load(tmp_path / "a").count == 320
    stats.save(tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_statistics_never_replace_a_directory_of_other_files(tmp_path):
    stats = neuron_stats(tiny(), stream(320), seq_len=32, batch_size=2, cfg=StatsConfig(k=4), dtype=None,
                         progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FFNLabError, match="not neuron statistics"):
        stats.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("batch", [5, 64])
def test_the_cpu_fold_keeps_the_top_k_by_the_one_order_and_the_eager_bins(dtype, batch, monkeypatch):
    """Coarse signed values (ties everywhere), bf16 as autocast gives them or float32: once the state
    is full, the one-pass fold keeps the top-k of the one order (|value| descending, then token
    ascending) index for index, the histogram of the eager binning count for count, and the moments."""
    from ffnlab.analysis import neurons

    calls = []
    monkeypatch.setattr(neurons, "_one_pass", lambda: lambda *a: calls.append(1) or fold_full(*a))
    gen = torch.Generator().manual_seed(0)
    acts = ((torch.randn(1200, 48, generator=gen) * 3).round() * torch.rand(48, generator=gen)).to(dtype)
    cfg = StatsConfig(k=6, threshold=0.5, bins=16)
    stats = LayerStats(48, cfg)
    for start in range(0, len(acts), batch):
        stats.update(acts[start:start + batch], torch.arange(start, min(start + batch, len(acts))))
    assert len(calls) >= len(acts) // batch - 2  # every batch after the state filled took the one-pass fold
    a = acts.float()
    want = (-a.abs()).argsort(dim=0, stable=True)[:6].T  # |value| descending, ties to the earlier token
    assert torch.equal(stats.top_index, want) and torch.equal(stats.top_values, a.gather(0, want.T).T)
    lo, hi = float(stats.edges[0]), float(stats.edges[-1])
    bins = torch.mul(a, 16 / (hi - lo)).add_(-lo * 16 / (hi - lo)).clamp_(0, 15).long()
    assert torch.equal(stats.hist, torch.stack([torch.bincount(col, minlength=16) for col in bins.T]))
    assert torch.equal(stats.above, (a > 0.5).sum(0))
    assert torch.allclose(stats.mean, a.double().mean(0), atol=1e-6)  # float32 sums: to float rounding
    assert torch.allclose(stats.var, a.double().var(0, unbiased=False), rtol=1e-5, atol=1e-6)


def test_without_the_one_pass_fold_the_eager_fold_gives_the_same_statistics(monkeypatch):
    """Where numba cannot load, full states fold eagerly: the same top-k and bins, moments to rounding."""
    from ffnlab.analysis import neurons

    gen = torch.Generator().manual_seed(1)
    acts = ((torch.randn(700, 24, generator=gen) * 3).round() * torch.rand(24, generator=gen)).to(torch.bfloat16)
    cfg = StatsConfig(k=5, threshold=0.5, bins=12)

    def fold() -> LayerStats:
        stats = LayerStats(24, cfg)
        for start in range(0, 700, 50):
            stats.update(acts[start:start + 50], torch.arange(start, min(start + 50, 700)))
        return stats

    fast = fold()
    monkeypatch.setattr(neurons, "_one_pass", lambda: None)
    slow = fold()
    for k in ("top_index", "top_values", "hist", "above"):
        assert torch.equal(getattr(fast, k), getattr(slow, k)), k
    assert torch.allclose(fast.mean, slow.mean, atol=1e-6) and torch.allclose(fast.m2, slow.m2, rtol=1e-5)


@pytest.mark.parametrize("full", [False, True])
def test_non_finite_activations_and_other_widths_are_refused(full):
    stats = LayerStats(8, StatsConfig(k=2))
    if full:
        stats.update(torch.randn(10, 8), torch.arange(10))
    bad = torch.randn(10, 8)
    bad[3, 5] = float("nan")
    bad[4, 1] = float("inf")
    with pytest.raises(FFNLabError, match="2 neurons had NaN or infinite"):
        stats.update(bad.to(torch.bfloat16), torch.arange(10, 20))
    with pytest.raises(FFNLabError, match="fed activations"):
        stats.update(torch.randn(10, 9), torch.arange(20, 30))


def test_a_saved_pass_of_another_model_is_not_continued(tmp_path):
    from types import SimpleNamespace

    from ffnlab.experiments.c7_memories import stream_stats

    tokens, cfg = stream(32 * 8), StatsConfig(k=3)
    a, b = SimpleNamespace(name="a", model=tiny(seed=0)), SimpleNamespace(name="b", model=tiny(seed=1))
    stream_stats(a, tokens, tmp_path / "stats", cfg, seq_len=32, batch_size=2, progress=False)
    again = stream_stats(a, tokens, tmp_path / "stats", cfg, seq_len=32, batch_size=2, progress=False)
    other = stream_stats(b, tokens, tmp_path / "stats", cfg, seq_len=32, batch_size=2, progress=False)
    fresh = neuron_stats(b.model, tokens, 32, 2, cfg, progress=False)
    for got, want in zip(other.layers, fresh.layers, strict=True):  # b's own pass, not a's continued
        assert torch.equal(got.top_index, want.top_index) and torch.equal(got.hist, want.hist)
    assert not torch.equal(again.layers[0].top_index, other.layers[0].top_index)
