"""Every bad input is answered by one line on stderr and exit code 2 — no traceback, no silent
wrong answer (issue 16.4). Each case names the words its one line must hold.

The cases are plain data so that the list can be run against any version of ffnlab. The tags
say what ffnlab did before issue 16 (commit 1560a9b): "traceback" (an exception escaped, or
several lines), "hang" (minutes), "silent" (exit 0), "misleading" (one line about something
else), "fine" (already one right line).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from ffnlab.cli import main
from ffnlab.data.corpus import default_corpus_files

SMALL = ["--preset", "tiny", "--tokenizer", "char", "--steps", "1", "--batch-size", "1", "--seq-len", "16",
         "--eval-batches", "1", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(default_corpus_files()[0].read_text()[:30_000])
    return path


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory) -> Path:
    """A finished tiny run, copied and damaged by the cases below."""
    root = tmp_path_factory.mktemp("run")
    assert main(["train", *SMALL, "--data", str(corpus), "--results", str(root), "--out", str(root / "D")]) == 0
    return root / "D"


@pytest.fixture(scope="module")
def store_db(run_dir) -> Path:
    return run_dir.parent / "ffnlab.db"


def _damaged_run(tmp: Path, run_dir: Path, file: str, content: bytes | None) -> Path:
    out = tmp / "D"
    shutil.copytree(run_dir, out)
    target = out / "checkpoint" / file
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content(target.read_bytes()) if callable(content) else content)
    return out


def _config(tmp: Path, text: str, suffix: str = ".toml") -> str:
    path = tmp / f"run{suffix}"
    path.write_text(text)
    return str(path)


def _hf_dir(tmp: Path, config: object, weights: bool = True) -> str:
    d = tmp / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    if weights:
        import torch
        from safetensors.torch import save_file

        save_file({"wte.weight": torch.zeros(2, 2)}, str(d / "model.safetensors"))
    return str(d)


def _db(tmp: Path, content) -> str:
    root = tmp / "R"
    root.mkdir()
    if callable(content):
        content(root / "ffnlab.db")
    else:
        (root / "ffnlab.db").write_bytes(content)
    return str(root)


def _foreign_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (x INTEGER)")
        conn.execute("INSERT INTO runs VALUES (1)")
    conn.close()


def _stats(tmp: Path, meta: str | None) -> str:
    d = tmp / "stats"
    d.mkdir()
    if meta is not None:
        (d / "meta.json").write_text(meta)
    return str(d)


PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm lines (loading weights) are not messages
GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 8, "vocab_size": 16, "n_positions": 32}

# (id, tag, args builder, words in the one line); builders get (tmp_path, ctx) where ctx holds the fixtures
CASES = [
    # -- config files: values of the wrong type ---------------------------------------------------------
    ("config-ratio-str", "traceback", lambda t, c: ["--config", _config(t, '[model.ffn]\nratio = "x"\n')],
     "ratio must be a finite number, got 'x'"),
    ("config-norm-eps-str", "traceback", lambda t, c: ["--config", _config(t, '[model]\nnorm_eps = "abc"\n')],
     "norm_eps must be a finite number"),
    ("config-lr-str", "traceback", lambda t, c: ["--config", _config(t, '[train]\nlr = "x"\n')],
     "lr must be a finite number"),
    ("config-n-experts-str", "traceback",
     lambda t, c: ["--config", _config(t, '[model.ffn]\nkind = "moe"\nn_experts = "8"\n')],
     "n_experts must be an integer"),
    ("config-dropout-str", "traceback", lambda t, c: ["--config", _config(t, '[model]\ndropout = "0.1"\n')],
     "dropout must be a finite number"),
    ("config-model-not-table", "traceback", lambda t, c: ["--config", _config(t, '{"model": 5}', ".json")],
     "[model] must be a table"),
    ("config-seed-bool", "silent", lambda t, c: ["--config", _config(t, "[train]\nseed = true\n")],
     "seed must be an integer, got True"),
    ("config-ffn-not-table", "traceback", lambda t, c: ["--config", _config(t, '{"model": {"ffn": 5}}', ".json")],
     "an ffn config must be a table"),
    ("config-d-model-float", "fine", lambda t, c: ["--config", _config(t, "[model]\nd_model = 64.5\n")],
     "d_model must be"),
    ("config-warmup-str", "fine", lambda t, c: ["--config", _config(t, '[train]\nwarmup = "10"\n')],
     "warmup must be"),
    ("config-lr-nan", "fine", lambda t, c: ["--config", _config(t, "[train]\nlr = nan\n")],
     "lr must be"),
    ("config-bias-str", "silent", lambda t, c: ["--config", _config(t, '[model.ffn]\nbias = "no"\n')],
     "bias must be true or false"),
    ("config-overrides-garbage", "traceback",
     lambda t, c: ["--config", _config(t, '{"model": {"ffn_overrides": [["a", {}]]}}', ".json")],
     "ffn_overrides must be a list of [layer, ffn table] pairs"),
    ("config-train-not-table", "traceback", lambda t, c: ["--config", _config(t, '{"train": [1, 2]}', ".json")],
     "[train] must be a table"),
    ("config-data-vocab-str", "silent",
     lambda t, c: ["--config", _config(t, '[data]\nvocab_size = "x"\ntokenizer = "bpe"\n')],
     "data.vocab_size must be an integer"),
    ("config-norm-eps-negative", "misleading", lambda t, c: ["--config", _config(t, "[model]\nnorm_eps = -1\n")],
     "norm_eps must be positive"),
    ("config-rotary-base-zero", "misleading",
     lambda t, c: ["--config", _config(t, '[model]\npositions = "rotary"\nrotary_base = 0\n')],
     "rotary_base must be positive"),
    ("config-aux-loss-negative", "silent",
     lambda t, c: ["--config", _config(t, '[model.ffn]\nkind = "moe"\naux_loss_coef = -1\n')],
     "aux_loss_coef must be >= 0"),
    # -- flags ---------------------------------------------------------------------------------------------
    ("train-vocab-size-0", "silent", lambda t, c: ["--vocab-size", "0", "--tokenizer", "bpe"],
     "vocab_size must be a positive integer, got 0"),
    ("train-vocab-size-negative", "fine", lambda t, c: ["--vocab-size", "-5", "--tokenizer", "bpe"],
     "vocab_size must be"),
    ("params-seq-lens-negative", "silent", lambda t, c: ["params", "--seq-lens", "-5"],
     "--seq-lens must be positive"),
    ("params-seq-lens-zero", "silent", lambda t, c: ["params", "--seq-lens", "64", "0"],
     "--seq-lens must be positive"),
    ("neuron-n-negative", "misleading", lambda t, c: ["neuron", str(c["run"]), "0", "0", "-n", "-3"],
     "-n must be a positive integer"),
    ("memories-k-zero", "fine", lambda t, c: ["memories", str(c["run"]), "--k", "0"],
     "top-k must be at least 1"),
    ("memories-seq-len-past-positions", "misleading",
     lambda t, c: ["memories", str(c["run"]), "--seq-len", "100", "--tokens", "256"],
     "seq_len=100 exceeds D's 64 positions"),
    ("memories-smollm2-seq-len-9000", "silent",
     lambda t, c: ["memories", "smollm2", "--seq-len", "9000", "--tokens", "9000"],
     "seq_len=9000 exceeds smollm2's 8192 positions"),
    ("trace-window-0", "silent",
     lambda t, c: ["trace", "smollm2", "--prompt", "Paris is in", "--subject", "Paris", "--window", "0"],
     "--window must be a positive number of layers"),
    ("trace-empty-prompt", "silent",
     lambda t, c: ["trace", "smollm2", "--prompt", "", "--subject", "", "--facts", "1", "--samples", "1"],
     "--prompt and --subject must not be empty"),
    # -- damaged checkpoints -------------------------------------------------------------------------------
    ("weights-truncated", "traceback",
     lambda t, c: ["memories", str(_damaged_run(t, c["run"], "model.safetensors", lambda b: b[:100]))],
     "damaged checkpoint file"),
    ("weights-empty", "traceback",
     lambda t, c: ["memories", str(_damaged_run(t, c["run"], "model.safetensors", b""))],
     "damaged checkpoint file"),
    ("weights-garbage", "traceback",
     lambda t, c: ["memories", str(_damaged_run(t, c["run"], "model.safetensors", b"\x00garbage" * 50))],
     "damaged checkpoint file"),
    ("model-json-garbage", "traceback",
     lambda t, c: ["memories", str(_damaged_run(t, c["run"], "model.json", b"{not json"))],
     "damaged checkpoint file"),
    ("model-json-list", "traceback",
     lambda t, c: ["memories", str(_damaged_run(t, c["run"], "model.json", b"[1, 2]"))],
     "damaged checkpoint file"),
    ("model-json-bad-value", "fine",
     lambda t, c: ["memories", str(_damaged_run(t, c["run"], "model.json", b'{"d_model": "x"}'))],
     "d_model must be"),
    ("trainer-json-missing", "traceback",
     lambda t, c: ["train", *SMALL, "--steps", "2", "--out", str(_damaged_run(t, c["run"], "trainer.json", None))],
     "damaged checkpoint file"),
    ("trainer-json-garbage", "traceback",
     lambda t, c: ["train", *SMALL, "--steps", "2", "--out", str(_damaged_run(t, c["run"], "trainer.json", b"]"))],
     "damaged checkpoint file"),
    ("trainer-json-unknown-field", "traceback",
     lambda t, c: ["train", *SMALL, "--steps", "2",
                   "--out", str(_damaged_run(t, c["run"], "trainer.json", b'{"step": 1, "x": 2}'))],
     "damaged checkpoint file"),
    ("optimizer-truncated", "traceback",
     lambda t, c: ["train", *SMALL, "--out", str(_damaged_run(t, c["run"], "optimizer.safetensors", lambda b: b[:64]))],
     "damaged checkpoint file"),
    # -- Hugging Face config.json with nonsense values -------------------------------------------------------
    ("hf-n-layer-huge", "hang", lambda t, c: ["models", "--path", _hf_dir(t, {**GPT2, "n_layer": 1_000_000})],
     "n_layer must be an integer between 1 and 1024"),
    ("hf-n-head-zero", "traceback", lambda t, c: ["models", "--path", _hf_dir(t, {**GPT2, "n_head": 0})],
     "n_head must be an integer between 1"),
    ("hf-n-embd-str", "traceback", lambda t, c: ["models", "--path", _hf_dir(t, {**GPT2, "n_embd": "big"})],
     "n_embd must be an integer"),
    ("hf-vocab-negative", "traceback", lambda t, c: ["models", "--path", _hf_dir(t, {**GPT2, "vocab_size": -1})],
     "vocab_size must be an integer"),
    ("hf-heads-do-not-divide", "traceback",
     lambda t, c: ["models", "--path", _hf_dir(t, {**GPT2, "n_embd": 9, "n_head": 2})],
     "its config does not make a model"),
    ("hf-config-list", "traceback", lambda t, c: ["models", "--path", _hf_dir(t, [1, 2])],
     "is not a JSON object"),
    # -- the run store --------------------------------------------------------------------------------------
    ("db-garbage", "traceback", lambda t, c: ["runs", "--results", _db(t, b"this is not sqlite" * 100)],
     "file is not a database"),
    ("db-truncated", "traceback",
     lambda t, c: ["runs", "--results", _db(t, c["db"].read_bytes()[:1000])], "run store"),
    ("db-foreign-schema", "traceback", lambda t, c: ["runs", "--results", _db(t, _foreign_db)],
     "is not an ffnlab run store"),
    ("db-garbage-train", "traceback",
     lambda t, c: ["train", *SMALL, "--results", _db(t, b"this is not sqlite" * 100)],
     "file is not a database"),
    ("db-foreign-schema-train", "traceback",
     lambda t, c: ["train", *SMALL, "--results", _db(t, _foreign_db)], "is not an ffnlab run store"),
    # -- paths that are files, or not paths -----------------------------------------------------------------
    ("train-results-is-a-file", "traceback", lambda t, c: ["--results", _file(t)], "is a file"),
    ("train-out-is-a-file", "traceback", lambda t, c: ["--out", _file(t)], "is a file"),
    ("study-results-is-a-file", "traceback", lambda t, c: ["study", "--results", _file(t)], "is a file"),
    ("memories-out-is-a-file", "misleading",
     lambda t, c: ["memories", str(c["run"]), "--tokens", "64", "--seq-len", "16", "--out", _file(t)], "is a file"),
    ("train-name-is-a-path", "silent", lambda t, c: ["--name", "../../escaped"], "names a run, not a path"),
    # -- stored results and statistics -----------------------------------------------------------------------
    ("result-json-garbage", "traceback",
     lambda t, c: ["run", "rank-collapse", "--results", _result(t, "{not json")], "is damaged"),
    ("result-json-wrong-shape", "traceback",
     lambda t, c: ["run", "rank-collapse", "--results", _result(t, '{"name": 1}')], "is damaged"),
    ("stats-meta-garbage", "traceback",
     lambda t, c: ["neuron", "smollm2", "0", "0", "--stats", _stats(t, "{oops")], "damaged neuron statistics"),
    ("stats-layer-missing", "traceback",
     lambda t, c: ["neuron", "smollm2", "0", "0", "--stats",
                   _stats(t, json.dumps({"config": {"k": 5}, "n_layers": 30, "count": 10, "seq_len": 8}))],
     "damaged neuron statistics"),
]


def _file(tmp: Path) -> str:
    (tmp / "a-file").write_text("not a directory")
    return str(tmp / "a-file")


def _result(tmp: Path, text: str) -> str:
    root = tmp / "R"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "rank-collapse-quick.json").write_text(text)
    return str(root)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, corpus, run_dir, store_db, tmp_path, capsys, monkeypatch):
    name, _tag, build, words = case
    monkeypatch.chdir(tmp_path)
    args = build(tmp_path, {"run": run_dir, "db": store_db})
    if args[0].startswith("--"):  # train flags
        args = ["train", *SMALL, "--data", str(corpus), *args]
    elif args[0] == "train":
        args = [*args, "--data", str(corpus)]
    if "--results" not in args and args[0] != "params" and args[0] != "models":
        args += ["--results", str(tmp_path / "results")]
    try:
        code = main(args)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert words in err, err
