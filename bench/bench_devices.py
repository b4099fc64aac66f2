"""Training throughput on every device present: tokens/s and model FLOP utilisation (MFU).

For each device (the CPU always; CUDA and MPS when there), ffnlab's own training step
(`train_step`: forward, backward, clipping, fused AdamW) in fp32 and, where the device
supports it, under bf16 autocast, on the `small` preset (CPU; batch 4 x 256) or `gpt2-small`
(accelerators; batch 8 x 1024, large enough to keep a GPU busy); and a top-2-of-4 MoE of the
same preset, whose forward never reads the routing on the host off the CPU. On the CPU the MoE
runs both dispatches: the per-expert loop (the CPU default) and the fixed-size buffers that
accelerators use, to show what the loop saves there.

MFU = tokens/s x model FLOPs per token (3 x forward, `flops_per_token`, active experts only)
/ peak, where the peak is measured in the same run by a large matmul on that device, in
that precision (datasheet peaks, where the GPU is known, are shown beside it).
The CPU's MFU target lives in bench_train; no GPU target is set until one has been measured.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.bench_train import matmul_peak
from ffnlab.analysis.accounting import flops_per_token
from ffnlab.device import available, bf16_supported, resolve_device, synchronize, to_device
from ffnlab.model import Transformer, preset
from ffnlab.train import TrainConfig
from ffnlab.train.trainer import make_optimizer, train_step

# dense (no sparsity) tensor-core peaks from the vendors' datasheets, FLOP/s: {name fragment: {precision: peak}}
DATASHEET = {"H200": {"bf16": 989e12, "fp32": 67e12}, "H100 PCIe": {"bf16": 756e12, "fp32": 51e12},
             "H100": {"bf16": 989e12, "fp32": 67e12}, "A100": {"bf16": 312e12, "fp32": 19.5e12},
             "L4": {"bf16": 121e12, "fp32": 30e12}, "A10": {"bf16": 125e12, "fp32": 31e12}}


def datasheet_peak(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks[precision] for key, peaks in DATASHEET.items() if key in name), None)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def step_seconds(model: Transformer, cfg: TrainConfig, batch: tuple[torch.Tensor, torch.Tensor], repeats: int,
                 device: torch.device) -> float:
    """Median seconds of one training step (after two warm-up steps), the device's queue drained."""
    opt = make_optimizer(model, cfg)
    times = []
    for i in range(repeats + 2):
        synchronize(device)
        t0 = time.perf_counter()
        train_step(model, opt, [batch], cfg)  # reads the loss: one sync per step, as in training
        synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(quick: bool = True) -> dict:
    repeats = 3 if quick else 10
    out: dict = {"devices": available(), "rows": []}
    rows = []
    for kind in available():
        device = resolve_device(kind)
        on_cpu = device.type == "cpu"
        name = "small" if on_cpu else "gpt2-small"
        dense_cfg = preset(name)
        moe_cfg = dense_cfg.with_ffn(kind="moe", n_experts=4, top_k=2, ratio=2.0)
        batch_size, seq = (4, 256) if on_cpu else (8, 1024)
        gen = torch.Generator().manual_seed(0)
        data = (torch.randint(0, dense_cfg.vocab_size, (batch_size, seq), generator=gen),
                torch.randint(0, dense_cfg.vocab_size, (batch_size, seq), generator=gen))
        batch = to_device(data, device)
        precisions = ["fp32", "bf16"] if bf16_supported(device) else ["fp32"]
        peaks = {p: matmul_peak(torch.bfloat16 if p == "bf16" else torch.float32, 2048 if on_cpu else 8192,
                                3 if quick else 6, device) for p in precisions}
        dispatches = ("indexed", "padded") if on_cpu else ("padded",)
        models = [(name, dense_cfg, "-")] + [(f"{name} moe 2-of-4", moe_cfg, d) for d in dispatches]
        for label, cfg, dispatch in models:
            train_flops = 3 * sum(flops_per_token(cfg, seq).values())  # forward + backward (2x forward)
            for precision in precisions:
                torch.manual_seed(0)
                model = Transformer(cfg).to(device).train()
                for ffn in model.ffns():
                    if dispatch != "-":
                        ffn.dispatch = dispatch
                tcfg = TrainConfig(batch_size=batch_size, seq_len=seq, lr=1e-4, steps=1, warmup=0,
                                   precision=precision)
                seconds = step_seconds(model, tcfg, batch, repeats, device)
                tps = batch_size * seq / seconds
                mfu = tps * train_flops / peaks[precision]
                sheet = datasheet_peak(device, precision)
                row = {"device": device_name(device), "model": label, "dispatch": dispatch, "precision": precision,
                       "batch": [batch_size, seq], "tokens_per_second": tps, "mfu": mfu,
                       "peak_flops_measured": peaks[precision], "peak_flops_datasheet": sheet,
                       "mfu_datasheet": tps * train_flops / sheet if sheet else None}
                out["rows"].append(row)
                rows.append([row["device"], label, dispatch, precision, f"{batch_size}x{seq}", tps,
                             peaks[precision] / 1e9, 100 * mfu,
                             "-" if sheet is None else f"{100 * row['mfu_datasheet']:.1f}"])
                del model
    out["threads"] = torch.get_num_threads()
    out["tables"] = [{
        "title": f"training step on every device present ({torch.get_num_threads()} CPU threads)",
        "columns": ["device", "model", "MoE dispatch", "precision", "batch", "tok/s", "peak GFLOP/s (matmul)",
                    "MFU %", "MFU % of datasheet"],
        "rows": rows}]
    notes = ["MFU = tokens/s x 3 x forward FLOPs per token (active experts only) / peak matmul FLOP/s measured "
             "on that device in that precision in this run",
             "MoE 'indexed' is the per-expert loop (reads routing on the host; the CPU default), 'padded' the "
             "fixed-size buffers used off the CPU (no host reads; computes unused rows)"]
    if available() == ["cpu"]:
        notes.append("no GPU here: only the CPU was measured")
    out["notes"] = notes
    return out
