"""`device_map="auto"` (accelerate): a pretrained model spread over devices answers every hook as a
whole one does. Here, with no GPU, accelerate places it on the CPU; the analyses must not notice."""

import pytest
import torch
from hf_tiny import V, tiny_hf

from ffnlab.analysis.neurons import StatsConfig, neuron_stats
from ffnlab.device import module_device
from ffnlab.model import capture
from ffnlab.pretrained import load


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    tiny_hf("gpt2").save_pretrained(path)
    return path


def test_a_device_mapped_model_gives_the_same_activations_and_statistics(checkpoint):
    plain, spread = load(checkpoint, progress=False), load(checkpoint, progress=False, device_map="auto")
    assert spread.meta["device_map"] == {"": "cpu"} and "device_map" not in plain.meta
    assert module_device(spread) == torch.device("cpu")
    assert spread.meta["hook_check"]["resid_post = stream + ffn_out"] < 1e-5
    tokens = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(0))
    names = [f"blocks.{i}.ffn.hook_post" for i in range(plain.n_layers)]
    with torch.no_grad(), capture(plain, names) as a, capture(spread, names) as b:
        plain(tokens), spread(tokens)
    assert all(torch.equal(a[n], b[n]) for n in names)
    stream = torch.randint(0, V, (400,), generator=torch.Generator().manual_seed(1))
    one, two = (neuron_stats(m, stream, 16, 4, StatsConfig(k=5), dtype=None, progress=False) for m in (plain, spread))
    assert all(torch.equal(x.top_index, y.top_index) and torch.allclose(x.mean, y.mean)
               for x, y in zip(one.layers, two.layers))


def test_device_map_and_several_processes_do_not_combine(tmp_path):
    from ffnlab.cli import main

    assert main(["memories", "smollm2", "--device-map", "auto", "--nproc", "2", "--results", str(tmp_path)]) == 2
