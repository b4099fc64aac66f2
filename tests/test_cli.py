"""The command line: bad input gives one line and a non-zero exit, never a traceback."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ffnlab.cli import main


def ffnlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ffnlab", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, words", [
    (["params", "--preset", "smol"], "unknown preset 'smol'; did you mean 'small'?"),
    (["params", "--preset", "tiny", "--ffn", "swigloo"], "did you mean 'swiglu'?"),
    (["params", "--seq-lens", "x"], "invalid int value"),
    (["no-such-command"], "invalid choice"),
])
def test_bad_input_is_one_line(args, words):
    out = ffnlab(*args)
    assert out.returncode == 2
    assert words in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_params_json(capsys):
    assert main(["params", "--preset", "gpt2-small", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["total"] == 124_439_808
    ffn = next(c for c in r["components"] if c["component"] == "ffn")
    assert round(ffn["pct_total"], 1) == 45.5
    assert r["crossover_attention_total"] == 3072


def test_params_compares_kinds(capsys):
    assert main(["params", "--preset", "tiny", "--ffn", "mlp", "swiglu", "none", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["ffn"] for r in rows] == ["mlp", "swiglu", "none"]
    assert rows[2]["crossover_attention_total"] is None


ABSENT = next((d for d, here in (("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available()))
               if not here), None)


@pytest.mark.skipif(ABSENT is None, reason="every device type is present")
@pytest.mark.parametrize("args", [["train"], ["memories", "m"], ["neuron", "m", "0", "0"], ["trace", "m"],
                                  ["run", "rank-collapse"], ["study"]])
def test_every_command_that_runs_a_model_takes_device_and_refuses_an_absent_one(args, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*args, "--device", ABSENT])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"argument --device: device '{ABSENT}' is not available here; available: auto, cpu" in err
    with pytest.raises(SystemExit):
        main([*args, "--help"])
    assert "--device DEVICE" in capsys.readouterr().out


_POOL = """
import sys, time, multiprocessing
from concurrent.futures import ProcessPoolExecutor
from ffnlab.cli import stop_workers_on_sigterm

if __name__ == "__main__":
    stop_workers_on_sigterm()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(time.sleep, 120)
        while not multiprocessing.active_children():
            time.sleep(0.05)
        time.sleep(1)  # the worker has taken the task
        print(multiprocessing.active_children()[0].pid, flush=True)
        future.result()
"""


def test_a_terminated_command_takes_its_worker_processes_with_it(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(_POOL)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGTERM)
        code = parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker)  # without the handler the worker sleeps on, orphaned
        assert code == 128 + signal.SIGTERM
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
