"""The ladder's fit statistics from two gloo processes (torchrun) equal one process's fit."""

import torch
from launch import torchrun
from ranks import reference_fits
from safetensors.torch import load_file


def test_two_ranks_fit_what_one_process_fits(tmp_path):
    one, calibrated = reference_fits(), reference_fits(calibrate=True)
    assert all(torch.equal(one[k], calibrated[k]) for k in one)  # one process calibrates on its first batch
    torchrun(2, "ladder", tmp_path / "two.safetensors")
    two = load_file(str(tmp_path / "two.safetensors"))
    assert two.pop("world").item() == 2 and two.keys() == one.keys()
    for k in one:  # counts, maxima and thresholds exactly; float64 sums to rounding (another order)
        exact = k.split(".", 1)[1] in ("above", "gate_open", "pos_n", "max_abs", "eps", "massive_bar", "moments.n",
                                       "ordinary.n", "coact")
        assert torch.equal(two[k], one[k]) if exact else torch.allclose(two[k], one[k], rtol=1e-10, atol=1e-9), k
    assert 0 < one["1.ordinary.n"].item() < one["1.moments.n"].item()  # the massive bar splits the tokens
