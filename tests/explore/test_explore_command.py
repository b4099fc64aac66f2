"""`ffnlab explore`: serves on 127.0.0.1 from one command, exports, and answers bad input with one line."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from ffnlab.cli import main


def ffnlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ffnlab", *args], capture_output=True, text=True, timeout=300)


def test_explore_serves_the_overview_on_loopback(tiny):
    run, results = tiny
    proc = subprocess.Popen([sys.executable, "-m", "ffnlab", "explore", str(run), "--port", "0", "--results",
                             str(results), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:(\d+)/) ", line)
        assert m, line + proc.stderr.read()
        for _ in range(100):  # the socket listens before the model loads; uvicorn answers once started
            try:
                with urllib.request.urlopen(m.group(1), timeout=30) as r:
                    html = r.read().decode()
                break
            except OSError:
                proc.poll()
                assert proc.returncode is None, proc.stderr.read()
        assert "<h1>run: every layer's FFN</h1>" in html
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in rest, err


def test_export_writes_the_pages(tiny, tmp_path, capsys):
    run, results = tiny
    out = tmp_path / "supplement"
    assert main(["explore", str(run), "--export", str(out), "--neurons", "1:5,0:7", "--per-layer", "0",
                 "--results", str(results), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.glob("neuron-*.html")) == ["neuron-00-00007.html", "neuron-01-00005.html"]
    assert (out / "index.html").is_file() and (out / "static" / "explore.js").is_file()
    assert f"overview, 2 layers and 2 neurons in {out}/index.html" in capsys.readouterr().out


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_a_taken_port_is_one_line(tiny, taken_port):
    out = ffnlab("explore", str(tiny[0]), "--port", str(taken_port), "--results", str(tiny[1]))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"cannot listen on 127.0.0.1:{taken_port} (Address already in use); pass another --port" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, words", [
    (["--neurons", "1:5"], "--neurons chooses what --export writes; pass --export DIR too"),
    (["--export", "X", "--neurons", "1-5"], "--neurons item '1-5' is not LAYER:NEURON"),
    (["--export", "X", "--neurons", "1:999"], "neuron 999 out of range; layer 1 has neurons 0..255"),
    (["--export", "X", "--per-layer", "-1"], "--per-layer must be 0 or more"),
    (["--port", "70000"], "--port must be between 0 and 65535, got 70000"),
    (["--stats", "nowhere"], "'nowhere' holds no neuron statistics (no meta.json)"),
    (["--host", "no.such.host.invalid", "--port", "0"], "cannot listen on no.such.host.invalid:0"),
])
def test_bad_input_is_one_line(tiny, tmp_path, capsys, args, words):
    args = [str(tmp_path / a) if a == "X" else a for a in args]
    assert main(["explore", str(tiny[0]), *args, "--results", str(tiny[1]), "--device", "cpu"]) == 2
    err = capsys.readouterr().err  # in-process (a subprocess costs seconds); the taken port above runs one
    assert words in err and len(err.strip().splitlines()) == 1, err
