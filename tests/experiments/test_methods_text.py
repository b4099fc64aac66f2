"""The methods text of a result is generated from what ran: change the config, the text changes."""

import dataclasses
from pathlib import Path

from ffnlab.experiments import common
from ffnlab.experiments.c6_frontier import BASELINE
from ffnlab.experiments.registry import MODES, Context, run_experiment


def test_the_methods_text_follows_the_size(tmp_path, monkeypatch):
    methods = {}
    for steps, lrs in ((20, (1e-3, 3e-3, 1e-2)), (24, (2e-3, 4e-3, 8e-3))):
        monkeypatch.setitem(common.SIZES, "test", dataclasses.replace(common.SIZES["test"], steps=steps, lrs=lrs))
        r = run_experiment("c6-shrink", "quick", results=tmp_path / str(steps), progress=False,
                           options={"size": "test"})
        methods[steps] = r.method
        assert f"Each model trains {steps} steps of 8x32 char tokens" in r.method
        assert ", ".join(f"{lr:g}" for lr in lrs) in r.method
        base = r.config["models"][BASELINE]
        layers, width = base["n_layers"], base["d_model"]
        assert f"{layers}-layer decoders (d={width})" in r.method
    assert methods[20] != methods[24]


def test_every_study_mode_has_a_size():
    # `make study` runs quick and `ffnlab study --full` full: each mode must name a size of common.SIZES
    for mode in MODES:
        s = common.size(Context(mode=mode, seeds=(0,), results=Path("unused")))
        assert s.steps > 0 and s.lrs
    assert common.SIZES["test"].steps < common.SIZES["quick"].steps < common.SIZES["full"].steps
    assert common.SIZES["full"].bar > common.SIZES["quick"].bar and common.SIZES["full"].plateau
