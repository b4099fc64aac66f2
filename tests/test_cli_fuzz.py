"""The command line under arbitrary arguments: a result, or one line and exit 2 (issue 16.6).

Arguments are drawn from the real commands' flags and values near and far from valid ones;
only commands that answer without training or loading models are run to the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ffnlab.cli import build_parser, main
from ffnlab.commands.train import build_configs, read_config
from ffnlab.errors import FFNLabError

pytestmark = pytest.mark.fuzz
PARSER = build_parser()
COMMANDS = {name: p for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)
            for name, p in a.choices.items()}
FLAGS = sorted({opt for p in COMMANDS.values() for a in p._actions for opt in a.option_strings})
values = st.one_of(st.sampled_from(["0", "-1", "3", "64", "1e9", "x", "", "tiny", "swiglu", "%", "--"]),
                   st.text(max_size=6))
argv = st.lists(st.one_of(st.sampled_from(FLAGS), values), max_size=6)


def answers_in_one_line(args: list[str]) -> None:
    """`ffnlab ARGS` exits 0, or 2 with one line on stderr; no other exception escapes."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exit:  # argparse: a usage error (2) or --help (0)
            code = exit.code
    assert code in (0, 2) and "Traceback" not in err.getvalue()
    if code == 2:
        assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()


@given(st.sampled_from(sorted(COMMANDS)), argv)
def test_any_arguments_parse_or_fail_in_one_line(command, rest):
    try:
        args = PARSER.parse_args([command, *rest])
    except SystemExit as exit:
        assert exit.code in (0, 2)
        return
    assert args.command == command


@given(argv)
def test_params_answers_anything(rest):
    answers_in_one_line(["params", *rest])


@given(st.sampled_from(["--kind", "--name", "--status", "--limit", "--compare", "--json"]), values)
def test_runs_answers_anything(tmp_path, flag, value):
    from ffnlab.store import Store

    if not (tmp_path / "ffnlab.db").exists():
        Store(tmp_path).start_run("train", {"a": 1})
    answers_in_one_line(["runs", "--results", str(tmp_path), flag, value])


@given(st.text(max_size=200), st.sampled_from([".toml", ".json"]), argv)
def test_train_settings_from_any_config_file_and_flags(text, suffix, rest):
    """`ffnlab train`'s settings (not a run): from any config file text and any flags."""
    try:
        args = PARSER.parse_args(["train", *rest])
    except SystemExit:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"run{suffix}"
        path.write_text(text)
        try:
            build_configs(args, read_config(str(path)), 256)
        except FFNLabError as err:
            assert "\n" not in str(err)
