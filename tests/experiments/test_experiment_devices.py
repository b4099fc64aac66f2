"""Experiments and the study take a device; without CUDA, `auto` gives what `cpu` gives."""

import pytest

from ffnlab import device as dev
from ffnlab.errors import FFNLabError
from ffnlab.experiments import common
from ffnlab.experiments.registry import run_experiment
from ffnlab.study import run_study


def test_experiment_on_cpu_and_auto_without_cuda_agree(tmp_path, monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    seen = []
    fit_on = common.train_or_reuse

    def spy(*args, **kw):
        seen.append(kw["device"])
        return fit_on(*args, **kw)

    monkeypatch.setattr(common, "train_or_reuse", spy)
    results = {d: run_experiment("rank-collapse", "quick", results=tmp_path / d, progress=False,
                                 options={"size": "test"}, device=d) for d in ("cpu", "auto")}
    assert seen and set(seen) == {"cpu", "auto"}  # every training run got the experiment's device
    cpu, auto = results["cpu"], results["auto"]
    assert [e.mean for e in auto.estimates] == [e.mean for e in cpu.estimates]
    assert auto.tables[0].rows == cpu.tables[0].rows and auto.verdict == cpu.verdict
    assert auto.config["device"] == cpu.config["device"] == "cpu"  # what `auto` resolved to, for the record


def test_study_refuses_an_absent_device_before_running_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    with pytest.raises(FFNLabError, match="device 'cuda' is not available here"):
        run_study("quick", results=tmp_path, device="cuda", render=False, log=lambda _: None)
    assert not (tmp_path / "experiments").exists() and not (tmp_path / "study").exists()
