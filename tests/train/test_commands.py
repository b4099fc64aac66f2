"""`ffnlab train` and `ffnlab runs`: real runs recorded in the store, and one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ffnlab.cli import main

TINY = ["--preset", "tiny", "--tokenizer", "char", "--steps", "3", "--batch-size", "2", "--seq-len", "16",
        "--eval-every", "3", "--eval-batches", "1", "--precision", "fp32", "--quiet"]


def test_train_records_a_run_that_runs_lists_and_compares(play_dir, tmp_path, capsys):
    res = ["--results", str(tmp_path)]
    assert main(["train", *TINY, "--data", str(play_dir), *res, "--name", "a"]) == 0
    assert main(["train", *TINY, "--data", str(play_dir), *res, "--name", "b", "--seed", "1", "--ffn", "swiglu"]) == 0
    out = capsys.readouterr().out
    assert "trained a: run 1, 3 steps, val loss" in out and (tmp_path / "runs" / "b" / "checkpoint").is_dir()
    assert main(["runs", *res, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["status"], r["seed"]) for r in runs] == [("b", "finished", 1), ("a", "finished", 0)]
    assert main(["runs", *res]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["id", "kind", "name", "status"] and len(table) == 5
    assert "gap_to_ngram" in table[0] and table[-1].startswith("gap_to_ngram: the best n-gram")
    assert main(["runs", *res, "--compare", "1", "2"]) == 0
    compared = capsys.readouterr().out
    assert "model.ffn.kind" in compared and "swiglu" in compared and "train.seed" in compared


def test_config_file_with_flags_overriding(play_dir, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[model]\npreset = "tiny"\nn_layers = 1\n[model.ffn]\nkind = "geglu"\n'
                      f'[train]\nsteps = 50\nlr = 0.002\n[data]\npath = "{play_dir}"\ntokenizer = "char"\n')
    assert main(["train", "--config", str(config), *TINY[4:], "--results", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["runs", "--results", str(tmp_path), "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)[0]["config"]
    assert cfg["model"]["n_layers"] == 1 and cfg["model"]["ffn"]["kind"] == "geglu"
    assert cfg["train"]["steps"] == 3 and cfg["train"]["lr"] == 0.002  # the flag won, the file filled in


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "/no/such/corpus"], "corpus path '/no/such/corpus' does not exist"),
    (["train", "--ffn", "swigloo"], "did you mean 'swiglu'"),
    (["train", "--preset", "smal"], "unknown preset 'smal'; did you mean 'small'"),
    (["train", "--steps", "0"], "steps must be a positive integer"),
    (["train", "--precision", "fp16"], "unknown precision 'fp16'"),
    (["train", "--seq-len", "999"], "seq_len=999 exceeds the model's max_seq_len"),
    (["train", "--tokenizer", "wordpiece"], "unknown tokenizer 'wordpiece'"),
    (["train", "--vocab-size", "100"], "BPE vocab_size must be at least 260"),
    (["train", "--config", "missing.toml"], "config file 'missing.toml' does not exist"),
    (["train", "--steps", "many"], "invalid int value: 'many'"),
    (["train", "--threads", "0"], "--threads must be a positive integer"),
    (["runs"], "no run store in"),
    (["runs", "--compare", "5"], "no run store in"),
])
def test_bad_input_is_one_line_and_exit_2(play_dir, tmp_path, capsys, args, message):
    extra = ["--results", str(tmp_path / "fresh")]
    if args[0] == "train":  # a quick real corpus, so only the bad input itself can fail
        extra += [] if "--data" in args else ["--data", str(play_dir)]
        extra += [] if {"--tokenizer", "--vocab-size"} & set(args) else ["--tokenizer", "char"]
    try:
        code = main([*args, *extra])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_corpus_file_from_a_real_process(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x81\x00" * 10)
    proc = subprocess.run([sys.executable, "-m", "ffnlab", "train", "--data", str(bad), "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"ffnlab train: error: corpus {str(bad)!r} is empty: all 1 files are not UTF-8 text"


def test_tiny_preset_trains_out_of_the_box_and_a_config_files_preset_names_the_run(play_dir, tmp_path, capsys):
    """Issue 16.4: the default seq_len follows the model (tiny has 64 positions, the default is 128);
    a config file's `preset = "tiny"` was labelled and stored as small-mlp-s0."""
    small = ["--tokenizer", "char", "--data", str(play_dir), "--steps", "1", "--batch-size", "1",
             "--eval-batches", "1", "--quiet", "--results", str(tmp_path)]
    assert main(["train", "--preset", "tiny", *small]) == 0
    config = tmp_path / "run.toml"
    config.write_text('[model]\npreset = "tiny"\nn_layers = 1\n')
    assert main(["train", "--config", str(config), *small, "--out", str(tmp_path / "b")]) == 0
    assert "trained tiny-mlp-s0" in capsys.readouterr().out
    assert main(["runs", "--results", str(tmp_path), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in runs] == ["tiny-mlp-s0", "tiny-mlp-s0"]
    assert [r["config"]["train"]["seq_len"] for r in runs] == [64, 64]
    assert (tmp_path / "runs" / "tiny-mlp-s0" / "checkpoint").is_dir()
