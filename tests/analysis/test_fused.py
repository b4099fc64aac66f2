import shutil

import pytest
import torch

import ffnlab.analysis.fused as fused
from ffnlab.analysis.neurons import LayerStats, StatsConfig, neuron_stats
from ffnlab.model import FFNConfig, Transformer, preset

CFG = StatsConfig(k=6, threshold=0.25, bins=16)


def acts(n: int = 600, f: int = 24, seed: int = 0) -> torch.Tensor:
    """bf16 activations, as autocast gives them: coarse values, so ties and bin edges are common."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, f, generator=g) * torch.rand(f, generator=g) * 3).bfloat16()


def folded(a: torch.Tensor, compiled: bool) -> LayerStats:
    stats = LayerStats(a.shape[1], CFG)
    stats.compiled = compiled
    for start in range(0, len(a), 64):
        stats.update(a[start:start + 64], torch.arange(start, min(start + 64, len(a))))
    return stats


def assert_same(a: LayerStats, b: LayerStats) -> None:
    assert torch.equal(a.top_index, b.top_index) and torch.equal(a.top_values, b.top_values)
    assert torch.equal(a.hist, b.hist) and torch.equal(a.above, b.above) and a.count == b.count
    # moments: float32 sums in another order, so to float32 rounding of values of size ~3
    assert torch.allclose(a.mean, b.mean, rtol=1e-5, atol=1e-6) and torch.allclose(a.m2, b.m2, rtol=1e-5)


def test_the_fused_fold_equals_the_eager_fold(monkeypatch):
    """`dense_fold` (here run uncompiled) gives the eager fold's bins and counts exactly."""
    monkeypatch.setattr(fused, "_compiled", fused.dense_fold)
    a = acts()
    eager, one_loop = folded(a, compiled=False), folded(a, compiled=True)
    assert_same(one_loop, eager)
    assert eager.hist.sum() == 600 * 24 and 0 < eager.above.sum() < 600 * 24


def test_a_failing_compiler_falls_back_to_the_eager_fold(monkeypatch):
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(fused, "_compiled", broken)
    a = acts(seed=1)
    with pytest.warns(RuntimeWarning, match="folding eagerly"):
        stats = folded(a, compiled=True)
    assert len(calls) == 1 and fused._compiled is False  # tried once, then never again in this process
    assert_same(stats, folded(a, compiled=False))


def test_neuron_stats_compiles_only_long_passes(monkeypatch):
    torch.manual_seed(0)
    model = Transformer(preset("tiny", n_layers=2, ffn=FFNConfig(kind="mlp", activation="gelu", d_ff=64))).eval()
    tokens = torch.randint(256, (640,), generator=torch.Generator().manual_seed(1))
    used = []
    monkeypatch.setattr(fused, "_compiled", lambda *args: used.append(1) or fused.dense_fold(*args))
    short = neuron_stats(model, tokens, seq_len=32, batch_size=4, cfg=CFG, progress=False)
    assert not used and not any(layer.compiled for layer in short.layers)
    forced = neuron_stats(model, tokens, seq_len=32, batch_size=4, cfg=CFG, progress=False, compiled=True)
    assert len(used) == 2 * 5  # every batch of both layers
    for a, b in zip(forced.layers, short.layers):
        assert_same(a, b)
    monkeypatch.setattr("ffnlab.analysis.neurons.COMPILE_MIN_TOKEN_LAYERS", 2 * 640)
    neuron_stats(model, tokens, seq_len=32, batch_size=4, cfg=CFG, progress=False)
    assert len(used) == 2 * 2 * 5


@pytest.mark.slow
def test_the_inductor_compiled_fold_bins_every_bf16_value_as_the_eager_fold():
    """The real torch.compile (TorchInductor, ~30 s): the same bin for every finite bf16 value
    (no fused multiply-add changes a rounding), and a stream folded the same way."""
    every = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    every = every[torch.isfinite(every.float())].reshape(-1, 1)
    scale, to_zero = 16 / 7.3, 8.0
    scalars = (*torch.tensor([scale, to_zero, 0.25]).unbind(), 15)
    if shutil.which("g++") is None and shutil.which("clang++") is None:
        pytest.skip("no C++ compiler for TorchInductor")
    out = fused.compiled_dense_fold(every, torch.zeros(1), torch.zeros(1, dtype=torch.int32), *scalars)
    assert out is not None  # a compiler is there, so compiling must work
    eager = torch.mul(every.float(), scale).add_(to_zero).clamp_(0, 15).to(torch.int32)
    assert torch.equal(out[3], eager)
    assert int(out[2]) == int((every.float() > 0.25).sum())
    a = acts(seed=2)
    assert_same(folded(a, compiled=True), folded(a, compiled=False))
