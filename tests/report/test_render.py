"""The report renders stored results into one valid, self-contained page whose answer follows the verdicts."""

import re
from collections import Counter
from pathlib import Path

import pytest
from htmlcheck import check
from stored_study import results, write_study

from ffnlab.cli import main
from ffnlab.errors import FFNLabError
from ffnlab.report import load_study, render_report
from ffnlab.report.answer import claim_verdict
from ffnlab.report.page import _answer as _answer_html
from ffnlab.report.page import _overview
from ffnlab.results import Deviation, Result


@pytest.fixture
def study(tmp_path: Path) -> Path:
    write_study(tmp_path / "results")
    return tmp_path / "results"


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    """The page rendered once for the read-only checks (figures take a moment each)."""
    root = tmp_path_factory.mktemp("study") / "results"
    write_study(root)
    return render_report(root).read_text()


def _answer(root: Path, **kw) -> str:
    return _answer_html(load_study(root, **kw))


def test_page_is_valid_and_self_contained(page):
    text = page
    s = check(text)
    assert s.errors == []
    dupes = [i for i, n in Counter(s.ids).items() if n > 1]
    assert dupes == []
    missing = {link[1:] for link in s.internal_links} - set(s.ids)
    assert missing == set()
    assert len(s.internal_links) > 30  # answer, overview, contents, reproducibility all link to sections
    assert s.fetches == [] and s.css_urls == []
    assert s.counts.get("script", 0) == 0 and s.counts.get("link", 0) == 0
    assert text.startswith("<!DOCTYPE html>") and '<meta name="viewport"' in text


def test_every_series_is_a_figure_with_its_lines_and_error_bars(page):
    text = page
    stored = results()
    n_series = sum(len(r.series) for r in stored)
    figures = re.findall(r'<figure id="([^"]+)" class="fig">(.*?)</figure>', text, flags=re.S)
    assert len(figures) == n_series == 7
    for r in stored:
        for i, series in enumerate(r.series):
            body = dict(figures)[f"fig-{r.name}-{i}"]
            assert series.x_label in body and series.y_label in body  # axis labels as SVG text
            for line in series.lines:
                assert f">{line.label}<" in body  # legend entry
            # one error-bar collection in the axes (before the legend) per line that has errors
            axes = body.split(f'id="fig-{r.name}-{i}-legend_1"')[0]
            assert axes.count(f'id="fig-{r.name}-{i}-LineCollection_') == sum(1 for ln in series.lines if ln.err)


def test_sections_show_numbers_verdicts_anchors_caveats_commands(page):
    text = page
    for cid in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8"):
        assert f'id="claim-{cid.lower()}"' in text
    assert "0.207 [0.169, 0.245]" in text  # linear − full loss, mean and 95% CI over 3 seeds
    assert "linear − full held-out loss &gt; 0.05 — lower CI bound above threshold" in text
    assert "Pires et al. 2023" in text and "+0.04 nats at 60% params" in text
    assert "weights are dequantised 4-bit (Q4_1) values" in text
    assert "<code>ffnlab run c8-facts --quick</code>" in text
    assert "0.029 [0.022, 0.036]" in text  # an interval without per-seed values (bootstrap) is shown
    assert "109,482,240" in text  # C5 accounting table, integers with separators
    # C7 neuron examples: the trigger token highlighted, promoted tokens with their leading space visible
    assert '<li>The king of <mark>France</mark> said <span class="note">(activation 4.21)</span></li>' in text
    assert "Enter <mark>KING</mark> HENRY" in text
    assert "<li>Christopher Columbus sailed across the Atlantic in the year</li>" in text  # a sentence, not a chip
    assert '<code class="tok">␣Paris</code>' in text and '<code class="tok">⏎</code>' in text
    # the failure is listed and the environment of the run is shown
    assert "RuntimeError: shape mismatch in blocks.3.attn.hook_z" in text
    assert "2.13.0" in text


def _answer_group(text: str, cid: str) -> str:
    answer = text[text.index('id="answer"'):]
    answer = answer[:answer.index("</section>")]
    groups = re.split(r"<h3>", answer)[1:]
    return next(g.split("</h3>")[0] for g in groups if f'href="#claim-{cid.lower()}"' in g)


def test_answer_is_computed_from_the_verdicts(page, study):
    assert _answer_group(page, "C3") == "What the measurements support"
    assert _answer_group(page, "C4") == "What holds only in part"  # two experiments disagree
    path = study / "experiments" / "c3-nonlinearity-quick.json"
    r = Result.load(path)
    r.verdict, r.reason = "not supported", "the linear FFN matched the full one within 0.01 nats"
    r.save(path)
    text = _answer(study)
    assert _answer_group(text, "C3") == "What they do not support"
    assert "The measurements do not support that the FFN matters through its element-wise nonlinearity" in text
    assert "The linear FFN matched the full one within 0.01 nats" in text
    (study / "experiments" / "c8-facts-quick.json").unlink()
    text = _answer(study)
    assert _answer_group(text, "C8") == "Not measured"
    assert "is open: no experiment has a stored result" in text


def test_claim_whose_only_experiment_failed_says_so(study):
    (study / "experiments" / "c2-rank-quick.json").unlink()
    st = load_study(study)
    text = _answer_html(st)
    assert _answer_group(text, "C2") == "Not measured"
    assert "c2-rank-minilm failed (RuntimeError: shape mismatch in blocks.3.attn.hook_z)" in text
    overview = _overview(st, ["C2"])
    assert '<span class="badge failed">failed</span>' in overview


def test_claim_verdict_aggregates():
    rs = {r.name: r for r in results()}
    assert claim_verdict([]) == "not measured"
    assert claim_verdict([rs["c1-position"]]) == "supported"
    assert claim_verdict([rs["c4-ablation"], rs["c4-ablation-smollm2"]]) == "partly supported"


def test_full_results_are_preferred_and_modes_can_be_picked(study):
    r = Result.load(study / "experiments" / "c1-position-quick.json")
    r.mode, r.reason = "full", "full-mode reason"
    r.save(study / "experiments" / "c1-position-full.json")
    by_name = {x.name: x for x in load_study(study).results}
    assert by_name["c1-position"].mode == "full"
    assert {x.mode for x in load_study(study, "quick").results} == {"quick"}
    assert "Full-mode reason" in _answer(study)  # first word capitalised in the sentence
    assert "Full-mode reason" not in _answer(study, mode="quick")


def test_broken_result_file_is_reported_not_fatal(study):
    (study / "experiments" / "c2-rank-quick.json").write_text("{not json")
    st = load_study(study)
    assert "c2-rank" not in {r.name for r in st.results}
    assert any(f.name == "c2-rank" and "unreadable result file" in f.error for f in st.failures)
    text = render_report(study).read_text()
    assert check(text).errors == [] and "unreadable result file c2-rank-quick.json" in text


def test_stale_failure_is_dropped_once_the_experiment_succeeds(study):
    r = Result.load(study / "experiments" / "c2-rank-quick.json")
    r.name, r.started = "c2-rank-minilm", "2025-11-25T09:00:00+00:00"
    r.save(study / "experiments" / "c2-rank-minilm-quick.json")
    assert [f.name for f in load_study(study).failures] == []


def test_no_results_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(FFNLabError, match="no stored results"):
        load_study(tmp_path / "empty")
    assert main(["report", "--results", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ffnlab report: error: no stored results" in err


def test_a_criterion_changed_after_results_were_seen_is_shown_as_a_deviation(study):
    assert 'id="deviations"' not in render_report(study).read_text()  # none logged: no section
    path = study / "experiments" / "c2-rank-quick.json"
    r = Result.load(path)
    r.deviations = [Deviation(2, "threshold moved from 0.3 to 0.5", "version 1's quick results", "a typo in v1")]
    r.save(path)
    assert Result.load(path).deviations == r.deviations  # round-trips through JSON
    html = render_report(study).read_text()
    section = html[html.index('id="deviations"'):]
    assert "threshold moved from 0.3 to 0.5" in section[:section.index("</section>")]
    article = html[html.index(f'id="exp-{r.name}"'):]
    assert "Changed after results were seen" in article[:article.index("</article>")]
    check(html)


def test_the_criteria_changed_after_results_were_seen_are_logged():
    from ffnlab.experiments.registry import load_all
    logged = {name: exp.deviations for name, exp in load_all().items() if exp.deviations}
    assert {"rank-collapse", "nonlinearity", "memorisation"} <= set(logged)
    assert all(d.version <= load_all()[name].version for name, ds in logged.items() for d in ds)


def test_the_trained_models_table_says_which_model_was_retrained_longer():
    from ffnlab.report.sections import training_table

    row = {"name": "c3 linear FFN s2", "family": "linear", "lr": 0.016, "steps": 3750, "test_loss": 1.6,
           "best_ngram": 2.0, "ngram_order": "trigram", "gap": 0.4, "bar": 0.0, "improvement": 0.004,
           "plateaued": True, "meets": True, "comparison": True, "first_steps": 2500}
    html = training_table([row, {**row, "name": "c3 gelu FFN s2", "steps": 2500, "first_steps": None}])
    assert html.count("retrained longer") == 1 and "its 2500-step run missed the plateau" in html
