"""Publishing a study: results copied, the page rendered from the copies, provenance written, nothing
replaced that is not an earlier publication."""

from pathlib import Path

from stored_study import write_study

from ffnlab.cli import main
from ffnlab.report import load_study
from ffnlab.report.publish import PROVENANCE, publish


def test_publish_copies_renders_and_records_provenance(tmp_path: Path):
    write_study(tmp_path / "results")
    out = publish(tmp_path / "results", tmp_path / "docs" / "study")
    copied = sorted(p.name for p in (out / "results" / "experiments").glob("*.json"))
    assert copied == sorted(p.name for p in (tmp_path / "results" / "experiments").glob("*.json"))
    assert (out / "results" / "study" / "quick.json").is_file()
    page = (out / "index.html").read_text()
    assert 'id="layers"' in page and str(out / "results") in page and ".tmp-" not in page
    # the copies are a complete study of their own: it loads and re-renders with nothing else
    assert [r.name for r in load_study(out / "results").results] == [r.name for r in
                                                                       load_study(tmp_path / "results").results]
    prov = (out / PROVENANCE).read_text()
    assert "`0.1.0+abc1234`" in prov and "## The quick study" in prov and "c2-rank-minilm" in prov  # failed there
    # publishing again replaces the earlier publication, atomically
    (tmp_path / "results" / "experiments" / "c8-facts-quick.json").unlink()
    publish(tmp_path / "results", out)
    assert not (out / "results" / "experiments" / "c8-facts-quick.json").exists()


def test_a_publication_can_be_continued_and_says_what_is_missing(tmp_path: Path):
    write_study(tmp_path / "results")
    sweep = tmp_path / "results" / "lr-sweeps" / "mlp-abc.json"
    sweep.parent.mkdir()
    sweep.write_text('{"family": "mlp", "chosen": 0.016}')
    out = publish(tmp_path / "results", tmp_path / "docs" / "study")
    assert (out / "results" / "lr-sweeps" / "mlp-abc.json").read_text() == sweep.read_text()
    prov = (out / PROVENANCE).read_text()
    study = load_study(tmp_path / "results")
    total = sum(r.wall_seconds for r in study.results if r.mode == "quick")
    assert f"{len([r for r in study.results if r.mode == 'quick'])} experiments here, {total:,.0f} s" in prov
    # the stored study's names are not the registered experiments': every registered one is missing
    assert "not yet run in this mode (nor in a fuller one): position-wise, " in prov
    assert "study --full --results R" in prov


def test_publish_never_replaces_a_directory_that_is_not_a_publication(tmp_path: Path, capsys):
    write_study(tmp_path / "results")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("mine")
    code = main(["report", "--results", str(tmp_path / "results"), "--publish", str(tmp_path / "docs")])
    err = capsys.readouterr().err
    assert code != 0 and "is not an earlier publication" in err and "Traceback" not in err
    assert (tmp_path / "docs" / "notes.md").read_text() == "mine"


def test_publish_and_out_exclude_each_other(tmp_path: Path, capsys):
    write_study(tmp_path / "results")
    argv = ["--publish", str(tmp_path / "x"), "--out", str(tmp_path / "y.html")]
    assert main(["report", "--results", str(tmp_path / "results"), *argv]) != 0
    assert not (tmp_path / "x").exists() and not (tmp_path / "y.html").exists()
    assert "exclude each other" in capsys.readouterr().err
