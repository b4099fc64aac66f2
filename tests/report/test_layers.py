"""The answer in layers: each statement lands on the level its evidence allows, and can move."""

from pathlib import Path

import pytest
from stored_study import write_study

from ffnlab.report import load_study, render_report
from ffnlab.report.layers import SETTLED, SUGGESTED, UNDECIDED, layered_answer
from ffnlab.results import INCONCLUSIVE, Result


@pytest.fixture
def study(tmp_path: Path) -> Path:
    write_study(tmp_path / "results")
    return tmp_path / "results"


def levels_of(root: Path) -> dict[str, dict[str, list]]:
    """level -> source -> statements."""
    out: dict[str, dict[str, list]] = {}
    for level, statements in layered_answer(load_study(root)).items():
        for s in statements:
            out.setdefault(level, {}).setdefault(s.source, []).append(s)
    return out


def edit(root: Path, name: str, **changes) -> None:
    path = root / "experiments" / f"{name}-quick.json"
    r = Result.load(path)
    for k, v in changes.items():
        setattr(r, k, v)
    r.save(path)


def test_each_statement_is_on_the_level_its_evidence_allows(study):
    lv = levels_of(study)
    # 3 seeds, interval clear of the threshold: suggested, with its number and interval
    assert "c3-nonlinearity" in lv[SUGGESTED]
    assert "linear − full held-out loss = 0.207 [" in lv[SUGGESTED]["c3-nonlinearity"][0].text
    # the shared-FFN gap 0.04 [0.015, 0.065] straddles its 0.05 threshold: within noise
    (noisy,) = lv[UNDECIDED]["c6-frontier"]
    assert noisy.why.startswith("effect within noise") and "--seeds 6" in noisy.command
    # C4's two experiments disagree: named, not hidden
    (conflict,) = lv[UNDECIDED]["C4"]
    assert "c4-ablation says not supported; c4-ablation-smollm2 says supported" in conflict.text
    # a failed experiment and its command
    (failed,) = lv[UNDECIDED]["c2-rank-minilm"]
    assert failed.why.startswith("failed: RuntimeError") and failed.command == "ffnlab run c2-rank-minilm --quick"
    assert SETTLED not in lv  # no experiment declared an exact statement


def test_too_few_seeds_and_under_trained_models_move_a_verdict_to_undecided(study):
    edit(study, "c3-nonlinearity", verdict="indicative: supported", seeds=[0])
    edit(study, "c8-facts", verdict=INCONCLUSIVE, reason="2 of 2 models miss their bar",
         extra={"verdict_if_trained": {"verdict": "supported", "reason": "x"}})
    lv = levels_of(study)
    assert "c3-nonlinearity" not in lv[SUGGESTED] and "c8-facts" not in lv[SUGGESTED]
    (few,) = lv[UNDECIDED]["c3-nonlinearity"]
    assert few.why == "too few seeds (1 of the 3 a verdict needs)"
    assert few.command == "ffnlab run c3-nonlinearity --full --seeds 3"
    (weak,) = lv[UNDECIDED]["c8-facts"]
    assert weak.why == "under-trained: 2 of 2 models miss their bar" and "would say: supported" in weak.text


def test_declared_statements_settled_stay_suggested_ones_are_demoted_with_their_experiment(study):
    statements = [{"level": "settled", "text": "The FFN is position-wise by construction (max |Δ| = 0)."},
                  {"level": "suggested", "text": "Layer 0's FFN acts as an extended embedding (0.9 nats)."}]
    edit(study, "c1-position", extra={"statements": statements})
    lv = levels_of(study)
    assert [s.text for s in lv[SETTLED]["c1-position"]] == [statements[0]["text"]]
    assert statements[1]["text"] in [s.text for s in lv[SUGGESTED]["c1-position"]]
    edit(study, "c1-position", verdict="indicative: supported", seeds=[0])
    lv = levels_of(study)
    assert [s.text for s in lv[SETTLED]["c1-position"]] == [statements[0]["text"]]  # exact: seeds do not matter
    assert statements[1]["text"] in [s.text for s in lv[UNDECIDED]["c1-position"]]
    assert "c1-position" not in lv.get(SUGGESTED, {})


def test_a_claim_with_nothing_stored_is_undecided_with_the_command(study):
    (study / "experiments" / "c8-facts-quick.json").unlink()
    (missing,) = levels_of(study)[UNDECIDED]["C8"]
    assert missing.why == "not measured" and missing.command == "ffnlab study --full"


def test_the_page_opens_with_the_three_levels(study):
    html = render_report(study).read_text()
    start = html.index('id="layers"')
    assert start < html.index('id="answer"') < html.index('id="overview"')
    layers = html[start:html.index("</section>", start)]
    assert [layers.index(f'id="level-{lv}"') for lv in (SETTLED, SUGGESTED, UNDECIDED)] == sorted(
        layers.index(f'id="level-{lv}"') for lv in (SETTLED, SUGGESTED, UNDECIDED))
    assert "Why undecided: effect within noise" in layers and "<code>ffnlab run c6-frontier --full --seeds 6" in layers


def test_a_verdict_on_exact_counts_is_settled(study):
    edit(study, "c5-accounting", extra={"exact": True})
    lv = levels_of(study)
    assert "c5-accounting" in lv[SETTLED] and "c5-accounting" not in lv[SUGGESTED]
