"""What the streaming neuron statistics cost on top of the forward pass they ride on.

Same model, same tokens, one thread, bf16 autocast, interleaved repeats (the machine is shared,
so only ratios measured side by side mean anything), three passes over the same windows:

- forward to the last FFN: the model's forward stopped after the last layer's `ffn.hook_post`,
  exactly the computation the statistics pass makes besides the statistics (the floor);
- full forward: the whole model, logits included (what a user's plain forward costs);
- statistics: `neuron_stats` (top-k triggers, mean/variance, sparsity, histograms of every neuron;
  once a layer's state is full, each batch in one compiled pass, `analysis.cpu_fold`, compiled in
  the warm-up or read from numba's cache).

Models: a GPT-2-layout checkpoint (6 layers, d=256, vocabulary 8192; random weights, written to a
temporary directory and loaded like any local checkpoint) and the packaged SmolLM2-135M.
Target: statistics >= 0.85x the tokens/s of the forward to the last FFN, on both.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

TARGET = 0.85
SEQ_LEN, BATCH = 128, 8


def gpt2_layout(path: str):
    """A randomly initialised GPT-2-layout checkpoint, written to `path` and loaded by ffnlab."""
    import transformers as tf

    from ffnlab.pretrained import load

    torch.manual_seed(0)
    cfg = tf.GPT2Config(vocab_size=8192, n_embd=256, n_layer=6, n_head=4, n_positions=SEQ_LEN, bos_token_id=0,
                        eos_token_id=0)
    tf.GPT2LMHeadModel(cfg).save_pretrained(path)
    return load(path, progress=False)


def passes(model, tokens: torch.Tensor) -> dict:
    """The three passes over `tokens` (windows of SEQ_LEN, batches of BATCH), as functions."""
    from ffnlab.analysis.neurons import StatsConfig, _Stop, neuron_stats, windows
    from ffnlab.model.hooks import hooks

    last = f"blocks.{model.n_layers - 1}.ffn.hook_post"

    def stop(_act):
        raise _Stop

    def forward(to_last_ffn: bool) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), \
                hooks(model, {last: stop} if to_last_ffn else {}):
            for batch, _ in windows(tokens, SEQ_LEN, BATCH):
                try:
                    model(batch)
                except _Stop:
                    pass

    return {"forward to last FFN": lambda: forward(True), "full forward": lambda: forward(False),
            "statistics": lambda: neuron_stats(model, tokens, SEQ_LEN, BATCH, StatsConfig(), progress=False)}


def measure(model, tokens: torch.Tensor, repeats: int) -> dict:
    cases = passes(model, tokens)
    for fn in cases.values():  # warm-up
        fn()
    times = {k: [] for k in cases}
    for _ in range(repeats):  # interleaved: load from other processes hits every case alike
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    n = len(tokens) // SEQ_LEN * SEQ_LEN
    best = {k: n / min(v) for k, v in times.items()}
    median = {k: n / statistics.median(v) for k, v in times.items()}
    return {"tokens": n, "tokens_per_second_best": best, "tokens_per_second_median": median,
            "ratio": best["statistics"] / best["forward to last FFN"],
            "ratio_median": median["statistics"] / median["forward to last FFN"],
            "ratio_full_forward": best["statistics"] / best["full forward"],
            "seconds": times}


def run(quick: bool = True) -> dict:
    import os

    from ffnlab.open import open_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict = {"target": TARGET, "threads": 1, "load_average": os.getloadavg()[0]}
        with tempfile.TemporaryDirectory() as tmp:
            model = gpt2_layout(tmp)
            tokens = torch.randint(0, 8192, (32_768 if quick else 131_072,), generator=torch.Generator().manual_seed(0))
            out["gpt2-layout 6x256"] = measure(model, tokens, 3 if quick else 7)
        opened = open_model("smollm2", progress=False)
        out["smollm2"] = measure(opened.model, opened.tokens_of(None, 4096 if quick else 16_384), 2 if quick else 5)
    finally:
        torch.set_num_threads(threads)
    names = ("gpt2-layout 6x256", "smollm2")
    out["within_target"] = all(out[n]["ratio"] >= TARGET for n in names)
    rows = [[n, out[n]["tokens"], out[n]["tokens_per_second_best"]["forward to last FFN"], out[n]["tokens_per_second_best"]["full forward"],
             out[n]["tokens_per_second_best"]["statistics"], out[n]["ratio"], out[n]["ratio_median"],
             out[n]["ratio_full_forward"]] for n in names]
    out["tables"] = [{"title": "streaming statistics vs the forward they ride on (1 thread, bf16 autocast, tok/s: "
                               "best of interleaved repeats)",
                      "columns": ["model", "tokens", "forward to last FFN", "full forward", "statistics",
                                  f"ratio (target >= {TARGET})", "ratio (medians)", "ratio vs full forward"],
                      "rows": rows}]
    out["notes"] = [f"statistics >= {TARGET}x the forward to the last FFN on both: "
                    f"{'yes' if out['within_target'] else 'NO'}; 1-minute load average at the start "
                    f"{out['load_average']:.1f} on {os.cpu_count()} cores"]
    return out
