"""The explorer on SmolLM2-135M: time from `ffnlab explore smollm2` to the first page, and a bounded load test.

1. `ffnlab memories smollm2` over a few thousand tokens (once, into a temporary results directory).
2. `ffnlab explore smollm2 --port 0` in a fresh process: seconds from the spawn to the overview answered
   (the model loads, the statistics load, uvicorn starts), then the first layer page (its value tokens are
   computed on first use) and the first neuron page.
3. Baseline: one client, requests one after another, on the neuron and the prompt endpoints.
4. Load: `clients` concurrent clients (threads, one keep-alive connection each) for `seconds` against
   127.0.0.1, each alternating a random neuron page and a prompt page; p50 / p99 latency per endpoint,
   throughput and errors. Reported as ratios to the one-client baseline of the same run.

Targets: zero errors under load. The prompt endpoint runs the model with hooks, which one lock serialises,
so its latency under load grows with the clients queued; the neuron page needs no lock.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

MODEL = "smollm2"
PROMPTS = ["The Eiffel Tower is in the city of", "To be, or not to be, that is the",
           "Once upon a time there was a", "The capital of Germany is"]


def _ffnlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "ffnlab", *args]


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status, time.perf_counter() - t0


def _paths(rng: random.Random, layers: int, width: int) -> dict[str, str]:
    text = urllib.parse.quote(rng.choice(PROMPTS))
    return {"neuron": f"/neuron/{rng.randrange(layers)}/{rng.randrange(width)}", "prompt": f"/prompt?text={text}"}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def _load(host: str, port: int, clients: int, seconds: float, layers: int, width: int) -> dict:
    lat: dict[str, list[float]] = {"neuron": [], "prompt": []}
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(host, port, timeout=120)
        kind = "neuron" if seed % 2 else "prompt"
        while time.monotonic() < stop:
            path = _paths(rng, layers, width)[kind]
            try:
                status, dt = _get(conn, path)
            except (OSError, http.client.HTTPException) as err:
                with lock:
                    errors.append(f"{path}: {type(err).__name__}")
                conn = http.client.HTTPConnection(host, port, timeout=120)
                continue
            with lock:
                (lat[kind] if status == 200 else errors).append(dt if status == 200 else f"{path}: {status}")
            kind = "prompt" if kind == "neuron" else "neuron"
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"wall_seconds": wall, "errors": len(errors), "first_errors": errors[:5],
            **{k: {"requests": len(v), "p50_ms": 1e3 * _pct(v, 0.5), "p99_ms": 1e3 * _pct(v, 0.99),
                   "per_second": len(v) / wall} for k, v in lat.items()}}


def run(quick: bool = True) -> dict:
    tokens, clients, seconds = (4096, 20, 30.0) if quick else (32768, 20, 60.0)
    env = {**os.environ, "FFNLAB_THREADS": os.environ.get("FFNLAB_THREADS", "1")}
    with tempfile.TemporaryDirectory(prefix="ffnlab-bench-explore-") as tmp:
        results = Path(tmp) / "results"
        t0 = time.perf_counter()
        subprocess.run(_ffnlab("memories", MODEL, "--tokens", str(tokens), "--results", str(results)), env=env,
                       check=True, capture_output=True, text=True, timeout=1800)
        memories_s = time.perf_counter() - t0
        log = Path(tmp) / "explore.log"  # progress bars go here: a pipe nobody reads would fill and block
        t0 = time.perf_counter()
        with open(log, "w") as err:
            proc = subprocess.Popen(_ffnlab("explore", MODEL, "--port", "0", "--results", str(results)), env=env,
                                    stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            for line in proc.stdout:  # notes (caveats) may come before the address
                if m := re.search(r"at http://(127\.0\.0\.1):(\d+)/", line):
                    break
            else:
                raise RuntimeError(f"explore did not start: {log.read_text()[-2000:]}")
            host, port = m.group(1), int(m.group(2))
            conn = http.client.HTTPConnection(host, port, timeout=300)
            status, _ = _get(conn, "/")  # the socket listens before the model loads: this waits for it
            if status != 200:
                raise RuntimeError(f"the overview answered {status}: {log.read_text()[-2000:]}")
            first_page_s = time.perf_counter() - t0
            _, first_layer_s = _get(conn, "/layer/15")
            _, first_neuron_s = _get(conn, "/neuron/15/100")
            layers, width = 30, 1536
            rng = random.Random(0)
            base = {"neuron": [], "prompt": []}
            for _ in range(10):
                for kind, path in _paths(rng, layers, width).items():
                    base[kind].append(_get(conn, path)[1])
            conn.close()
            load = _load(host, port, clients, seconds, layers, width)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    single = {k: 1e3 * statistics.median(v) for k, v in base.items()}
    out = {"model": MODEL, "tokens": tokens, "clients": clients, "seconds": seconds, "threads": env["FFNLAB_THREADS"],
           "memories_seconds": memories_s, "first_page_seconds": first_page_s, "first_layer_page_seconds": first_layer_s,
           "first_neuron_page_seconds": first_neuron_s, "single_client_p50_ms": single, "load": load,
           "ok": load["errors"] == 0}
    rows = [[k, load[k]["requests"], single[k], load[k]["p50_ms"], load[k]["p99_ms"], load[k]["p50_ms"] / single[k],
             load[k]["per_second"]] for k in ("neuron", "prompt")]
    out["tables"] = [
        {"title": f"start-up of `ffnlab explore {MODEL}` ({tokens:,}-token statistics)",
         "columns": ["first overview s", "first layer page s", "first neuron page s"],
         "rows": [[first_page_s, first_layer_s, first_neuron_s]]},
        {"title": f"load: {clients} clients for {seconds:.0f} s on 127.0.0.1; {load['errors']} errors",
         "columns": ["endpoint", "requests", "1 client p50 ms", "p50 ms", "p99 ms", "p50 / 1 client", "req/s"],
         "rows": rows}]
    out["notes"] = ["target: zero errors under load" + (" (met)" if out["ok"] else f" (NOT met: {load['first_errors']})")]
    return out
