"""A real experiment from the registry, run by the study at test size, rendered, and opened in Chromium."""

import html

import pytest
from browser import Browser, chromium_path
from htmlcheck import check
from test_browser import FIGURES

from ffnlab.study import run_study
from ffnlab.results import base_verdict


def test_real_experiment_to_report_in_browser(tmp_path):
    run = run_study("quick", results=tmp_path / "results", only=["position-wise"], progress=False,
                    log=lambda *_: None, options={"size": "test"})
    [outcome] = run.outcomes
    assert outcome.status == "ran", outcome.error
    result = outcome.result
    assert result.claim == "C1" and base_verdict(result.verdict) in ("supported", "partly supported", "not supported")
    text = run.report.read_text()
    structure = check(text)
    assert structure.errors == [] and structure.fetches == []
    assert html.escape(result.reason) in text  # the experiment's own reason, from its stored result
    assert html.escape(result.command) in text
    if chromium_path() is None:
        pytest.skip("needs chromium (`make test` installs it)")
    with Browser(chromium_path()) as b:
        b.open(run.report.as_uri(), 1024, 768)
        figs = b.eval(FIGURES)
        assert len(figs) == len(result.series) >= 1
        assert all(f["width"] > 300 and f["shapes"] > 10 for f in figs), figs
        assert b.console_errors() == []
        assert set(b.requests()) == {run.report.as_uri()}
