"""The run store on a damaged ffnlab.db: its runs, or one FFNLabError (issue 16.6)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ffnlab.errors import FFNLabError
from ffnlab.store import Store

pytestmark = pytest.mark.fuzz


@functools.cache
def db_bytes() -> bytes:
    """A real store with three runs (not a fixture: Hypothesis would print all of it on a failure)."""
    with tempfile.TemporaryDirectory() as root:
        store = Store(root)
        for i in range(3):
            run = store.start_run("train", {"i": i}, name=f"r{i}")
            store.log_metrics(run, 1, {"loss": 1.0})
            store.finish_run(run, {"val_loss": float(i)})
        Store(root).runs()  # the last connection closes: the WAL is folded into the file
        return (Path(root) / "ffnlab.db").read_bytes()


@given(st.sampled_from(["truncate", "flip", "garbage"]), st.floats(0, 1, exclude_max=True), st.binary(max_size=64),
       st.booleans())
def test_a_damaged_store_reads_or_fails_in_one_line(how, at, junk, readonly):
    db = db_bytes()
    i = int(at * len(db))
    data = {"truncate": db[:i], "flip": db[:i] + junk + db[i + len(junk):], "garbage": junk}[how]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "ffnlab.db").write_bytes(data)
        try:
            store = Store(tmp, readonly=readonly)
            for run in store.runs():
                store.metrics(run.id)
                store.artifacts(run.id)
        except FFNLabError as err:
            assert "\n" not in str(err)
