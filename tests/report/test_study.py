"""`ffnlab study`: every experiment runs or is reused, a failure is recorded and does not stop the
others, and the report is rendered at the end."""

import json
import sys

import pytest
from htmlcheck import check

import ffnlab.experiments as experiments_pkg
from ffnlab.analysis.accounting import account_config
from ffnlab.cli import main
from ffnlab.experiments.registry import EXPERIMENTS, Experiment, Findings, load_all
from ffnlab.model.presets import preset
from ffnlab.results import Criterion, Estimate, Table
from ffnlab.study import _import_experiments, run_study

calls = {"accounting": 0, "broken": 0}


def accounting(ctx) -> Findings:
    """A real, fast experiment: exact FFN parameter shares of BERT-base and GPT-2 small."""
    calls["accounting"] += 1
    rows, shares = [], []
    for name in ("bert-base", "gpt2-small"):
        acc = account_config(preset(name))
        rows.append([name, acc.total, acc.components["ffn"], 100 * acc.share("ffn")])
        shares.append(acc.share("ffn"))
    crit = Criterion("FFN share of parameters (BERT-base)", ">", 0.4, "exact count")
    return Findings(title="FFN parameter share", method="Exact count.",
                    criterion=crit, verdict="supported" if shares[0] > crit.threshold else "not supported",
                    reason=f"BERT-base FFN share {100 * shares[0]:.1f}%",
                    estimates=[Estimate(crit.quantity, shares[0], shares[0], shares[0], [shares[0]])],
                    tables=[Table("Parameters", ["model", "total", "FFN", "FFN share (%)"], rows)])


def broken(ctx) -> Findings:
    calls["broken"] += 1
    raise RuntimeError("the corpus is missing\nsecond line of detail")


@pytest.fixture
def registered(monkeypatch):
    load_all()
    for name, fn, claim in (("test-accounting", accounting, "C5"), ("test-broken", broken, "C3")):
        monkeypatch.setitem(EXPERIMENTS, name, Experiment(name, claim, 1, name, fn, {"quick": 1, "full": 1}, 0))
    calls.update(accounting=0, broken=0)
    return ["test-accounting", "test-broken"]


def test_failure_is_recorded_and_the_rest_runs(registered, tmp_path):
    root = tmp_path / "results"
    run = run_study("quick", results=root, only=registered, progress=False, log=lambda *_: None)
    status = {o.name: o.status for o in run.outcomes}
    assert status == {"test-accounting": "ran", "test-broken": "failed"}
    record = json.loads((root / "study" / "quick.json").read_text())
    assert record["experiments"]["test-broken"]["error"] == "RuntimeError: the corpus is missing"
    assert record["environment"]["torch"].startswith("2.")
    assert "second line of detail" in (root / "study" / "logs" / "test-broken-quick.txt").read_text()
    text = run.report.read_text()
    assert check(text).errors == []
    assert "109,482,240" in text and "BERT-base FFN share 51.8%" in text  # computed, from the stored result
    assert "RuntimeError: the corpus is missing" in text

    again = run_study("quick", results=root, only=registered, progress=False, log=lambda *_: None)
    assert {o.name: o.status for o in again.outcomes} == {"test-accounting": "reused", "test-broken": "failed"}
    assert calls == {"accounting": 1, "broken": 2}


def test_cli_prints_verdict_table_and_wall_time(registered, tmp_path, capsys):
    code = main(["study", "--quick", "--results", str(tmp_path / "r"), "--no-progress",
                 "--only", "test-accounting", "--only", "test-broken"])
    out = capsys.readouterr()
    assert code == 1  # one experiment failed
    table = out.out[out.out.index("claim"):]
    assert "test-accounting" in table and "supported" in table and "0.518 (1 seed): FFN share of parameters (BERT-base)" in table
    assert "test-broken" in table and "RuntimeError: the corpus is missing" in table
    assert "2 experiments, 1 failed, wall time" in out.out
    assert (tmp_path / "r" / "report" / "index.html").exists()


def test_unknown_experiment_is_one_line(registered, tmp_path, capsys):
    assert main(["study", "--results", str(tmp_path), "--only", "test-acounting"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'test-acounting'; did you mean 'test-accounting'?" in err
    assert err.count("\n") == 1


def test_module_that_fails_to_import_does_not_stop_the_registry(tmp_path, monkeypatch):
    (tmp_path / "zz_broken_module.py").write_text("raise ImportError('needs a package that is not installed')\n")
    monkeypatch.setattr(experiments_pkg, "__path__", [*experiments_pkg.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "ffnlab.experiments.zz_broken_module", raising=False)
    failures = _import_experiments()
    assert [(f.name, f.error) for f in failures] == [
        ("module:zz_broken_module", "ImportError: needs a package that is not installed")]
    load_all()  # does not raise: the broken module is stubbed for the rest of the run
    monkeypatch.delitem(sys.modules, "ffnlab.experiments.zz_broken_module")
