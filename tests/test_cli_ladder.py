"""`ffnlab ladder` on a tiny trained run: JSON out, a store record, resume, and bad input as one line."""

import json
import re
from pathlib import Path

import pytest

from ffnlab.cli import main
from ffnlab.data.corpus import default_corpus_files
from ffnlab.store import Store

SMALL = ["--preset", "tiny", "--tokenizer", "char", "--steps", "1", "--batch-size", "1", "--seq-len", "16",
         "--eval-batches", "1", "--threads", "1", "--quiet"]
LADDER = ["--layers", "0-1", "--rungs", "affine", "rank-4", "topk-50", "drop-attn", "--fit-tokens", "256",
          "--eval-tokens", "128", "--seq-len", "16", "--last-n", "1", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ladder")
    corpus = root / "small.txt"
    corpus.write_text(default_corpus_files()[0].read_text()[:30_000])
    assert main(["train", *SMALL, "--data", str(corpus), "--results", str(root), "--out", str(root / "D")]) == 0
    return root / "D"


def test_ladder_json_store_record_and_resume(run_dir, tmp_path, capsys):
    args = ["ladder", str(run_dir), *LADDER, "--results", str(tmp_path), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert [x["layer"] for x in first["layers"]] == [0, 1] and first["windows"] == 8
    for layer in first["layers"]:
        r = layer["rungs"]
        assert r["zero"]["recovered"] == 0 and r["affine"]["flops"] > 0 and r["drop-attn"]["recovered"] is None
        assert r["affine"]["r2"] <= 1 and len(r["affine"]["recovered_ci"]) == 2
    (run,) = Store(tmp_path).runs(kind="ladder")
    assert run.status == "finished" and set(run.summary["affine_recovered"]) == {"0", "1"}
    assert main(args) == 0  # resumed: read back from the ladder's directory
    assert json.loads(capsys.readouterr().out) == first
    assert main(["ladder", str(run_dir), *LADDER, "--results", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert re.search(r"^\s+0\s", table, re.M) and "affine" in table and "dropping the last n FFNs" in table


@pytest.mark.parametrize("extra, words", [
    (["--rungs", "rank-x"], "accepted: zero"),
    (["--layers", "7"], "does not exist"),
    (["--layers", "a-b"], "--layers takes"),
    (["--fit-tokens", "0"], "--fit-tokens must be a positive integer"),
    (["--eval-tokens", "100000000"], "are needed"),
    (["--last-n", "x"], "--last-n takes"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys, extra, words):
    code = main(["ladder", str(run_dir), "--fit-tokens", "64", "--eval-tokens", "64", "--seq-len", "16",
                 "--no-progress", "--results", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err


def test_another_setting_in_the_same_out_is_refused(run_dir, tmp_path, capsys):
    out = str(tmp_path / "L")
    base = ["ladder", str(run_dir), "--layers", "0", "--rungs", "affine", "--seq-len", "16", "--last-n", "none",
            "--fit-tokens", "64", "--no-progress", "--results", str(tmp_path), "--out", out]
    assert main([*base, "--eval-tokens", "64"]) == 0
    capsys.readouterr()
    assert main([*base, "--eval-tokens", "128"]) == 2
    assert "other fit tokens, eval tokens;" in capsys.readouterr().err
    assert main([*base, "--eval-tokens", "128", "--fresh"]) == 0
