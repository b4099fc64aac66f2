"""A tiny trained ffnlab model with `ffnlab memories` statistics over a few thousand tokens, and the
explorer app serving it on 127.0.0.1 (a real uvicorn server in a thread), shared by the explorer tests."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))  # the report tests' Chromium driver

from ffnlab.cli import main  # noqa: E402
from ffnlab.data import prepare_data  # noqa: E402
from ffnlab.data.corpus import default_corpus_files  # noqa: E402
from ffnlab.model import preset  # noqa: E402
from ffnlab.train import TrainConfig, train  # noqa: E402

TOKENS = 4096


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, results directory): a 2-layer char model trained briefly, and its statistics."""
    base = tmp_path_factory.mktemp("explore")
    corpus = base / "play.txt"
    corpus.write_text(default_corpus_files()[3].read_text()[:60_000])
    data = prepare_data(str(corpus), "char", 0, cache_dir=base / "cache")
    torch.manual_seed(0)
    cfg = TrainConfig(steps=30, batch_size=8, seq_len=64, eval_every=30, eval_batches=1, precision="fp32")
    train(preset("tiny", vocab_size=data.vocab_size), cfg, data, base / "run", progress=False)
    results = base / "results"
    assert main(["memories", str(base / "run"), "--data", str(corpus), "--tokens", str(TOKENS), "--seq-len", "64",
                 "--k", "8", "--results", str(results), "--device", "cpu"]) == 0
    return base / "run", results


@pytest.fixture(scope="session")
def explorer(tiny):
    from ffnlab.explore import Explorer

    run, results = tiny
    return Explorer.open(str(run), results=results, device="cpu", progress=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(explorer):
    """The app on a free 127.0.0.1 port; yields its base URL."""
    import uvicorn

    from ffnlab.explore import build_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(build_app(explorer), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
