"""Neuron statistics of two gloo processes (torchrun) equal one process's: top-k indices bit for bit."""

import pytest
import torch
from launch import torchrun
from ranks import reference_stats

from ffnlab.analysis.neurons import NeuronStats


def assert_same(one: NeuronStats, two: NeuronStats) -> None:
    assert two.count == one.count == 23 * 16
    for a, b in zip(one.layers, two.layers, strict=True):
        assert torch.equal(a.top_index, b.top_index)
        assert torch.equal(a.top_values, b.top_values)
        assert torch.equal(a.above, b.above) and torch.equal(a.hist, b.hist) and torch.equal(a.edges, b.edges)
        assert torch.allclose(a.mean, b.mean, rtol=1e-5, atol=1e-7)  # float32 batch sums
        assert torch.allclose(a.m2, b.m2, rtol=1e-5, atol=1e-7)


def test_two_ranks_equal_one_process(tmp_path):
    one = reference_stats()
    # the stream repeats tokens, so equal activations compete for the last top-k places
    assert any(len(set(layer.top_values.abs()[:, -1].tolist())) < layer.n_neurons for layer in one.layers) or \
        any((layer.top_values.abs()[:, :-1] == layer.top_values.abs()[:, 1:]).any() for layer in one.layers)
    torchrun(2, "memories", tmp_path / "two")
    assert_same(one, NeuronStats.load(tmp_path / "two"))


class Killed(Exception):
    pass


def test_a_pass_killed_in_one_process_resumes_on_two_ranks(tmp_path):
    partial = tmp_path / "partial"

    def save_and_die(stats):
        stats.save(partial)
        raise Killed

    with pytest.raises(Killed):
        reference_stats(checkpoint=save_and_die)
    assert 0 < NeuronStats.load(partial).count < 23 * 16
    torchrun(2, "memories", tmp_path / "two", partial)
    assert_same(reference_stats(), NeuronStats.load(tmp_path / "two"))
