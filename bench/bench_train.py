"""Training throughput: ffnlab's training step vs Hugging Face `GPT2LMHeadModel` at the identical
architecture (the `small` preset), and model FLOP utilisation against this CPU's matmul peak.

Targets at `small`: >= 1.5x HF tokens/s, >= 40% of the peak measured in the same run.
Both models see the same batch, the same loss and AdamW, in fp32 and under bf16 autocast;
steps are interleaved (ffnlab, HF, ffnlab, ...) so load from other processes hits both alike.
A torch.profiler pass over ffnlab's bf16 step shows where the time goes.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F_

from ffnlab.analysis.accounting import flops_per_token
from ffnlab.device import autocast, bf16_supported, synchronize
from ffnlab.model import Transformer, preset
from ffnlab.train import TrainConfig
from ffnlab.train.trainer import make_optimizer, train_step

TARGET_SPEEDUP, TARGET_MFU = 1.5, 0.40


def gpt2_like(cfg) -> torch.nn.Module:
    """`GPT2LMHeadModel` with ffnlab's `small` architecture, built from a config (no download)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.d_model,
                    n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.ffn.width(cfg.d_model),
                    activation_function="gelu", layer_norm_epsilon=cfg.norm_eps, resid_pdrop=0.0,
                    embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    hf._attn_implementation = "sdpa"  # the fused kernel, as ffnlab uses
    return GPT2LMHeadModel(hf).train()


def hf_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
            precision: str) -> float:
    """The usual PyTorch loop around a Hugging Face model: same loss, clipping and AdamW as ffnlab."""
    with autocast("cpu", precision):
        logits = model(input_ids=x).logits
        loss = F_.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def matmul_peak(dtype: torch.dtype, n: int, repeats: int, device: torch.device | str = "cpu") -> float:
    """FLOP/s of the best of `repeats` (n x n) @ (n x n) products: the device's practical peak."""
    device = torch.device(device)
    a, b = torch.randn(n, n).to(device, dtype), torch.randn(n, n).to(device, dtype)
    a @ b

    def product() -> None:
        a @ b
        synchronize(device)

    synchronize(device)
    best = min(_seconds(product) for _ in range(repeats))
    return 2 * n**3 / best


def _seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def profile(step: Callable[[], object], top: int = 10) -> list[list]:
    """The ops that take the most self CPU time over two steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [[e.key, e.count // 2, e.self_cpu_time_total / 2e3, 100 * e.self_cpu_time_total / total]
            for e in events[:top]]


def run(quick: bool = True) -> dict:
    cfg = preset("small")
    batch, seq = (8, cfg.max_seq_len)
    repeats = 4 if quick else 12
    tcfg = TrainConfig(batch_size=batch, seq_len=seq, lr=1e-4, grad_clip=1.0, steps=1, warmup=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)
    y = torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)
    torch.manual_seed(0)
    ours, theirs = Transformer(cfg).train(), gpt2_like(cfg)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    train_flops = 3 * sum(flops_per_token(cfg, seq).values())  # forward + backward (2x forward)
    precisions = ["fp32", "bf16"] if bf16_supported() else ["fp32"]
    rows, out = [], {"params_ffnlab": n_ours, "params_hf": n_theirs, "batch": [batch, seq],
                     "train_flops_per_token": train_flops, "threads": torch.get_num_threads(),
                     "load_average": os.getloadavg()[0]}
    for precision in precisions:
        cfg_p = tcfg.replace(precision=precision)
        opt_ours = make_optimizer(ours, cfg_p)
        adamw = {"lr": 1e-4, "betas": (0.9, 0.95), "weight_decay": 0.1}
        opt_theirs = torch.optim.AdamW(theirs.parameters(), **adamw, foreach=True)  # the usual multi-tensor AdamW
        opt_fused = torch.optim.AdamW(theirs.parameters(), **adamw, fused=True)  # separates model from optimizer
        steps = {"ffnlab": lambda: train_step(ours, opt_ours, [(x, y)], cfg_p),
                 "hf": lambda: hf_step(theirs, opt_theirs, x, y, precision),
                 "hf_fused": lambda: hf_step(theirs, opt_fused, x, y, precision)}
        for fn in steps.values():  # warm-up: allocator, oneDNN kernels, optimizer state
            fn()
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(repeats):
            for name, fn in steps.items():
                times[name].append(_seconds(fn))
        peak = matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32, 2048, 3 if quick else 6)
        med = {k: statistics.median(v) for k, v in times.items()}
        tps = {k: batch * seq / v for k, v in med.items()}
        mfu = {k: tps[k] * train_flops / peak for k in tps}
        ratio = statistics.median(b / a for a, b in zip(times["ffnlab"], times["hf"]))  # paired by round
        ratio_fused = statistics.median(b / a for a, b in zip(times["ffnlab"], times["hf_fused"]))
        out[precision] = {"tokens_per_second": tps, "speedup": ratio, "speedup_vs_hf_fused_adamw": ratio_fused,
                          "mfu": mfu, "peak_flops": peak, "step_seconds": times}
        rows.append([precision, tps["ffnlab"], tps["hf"], ratio, tps["hf_fused"], ratio_fused, peak / 1e9,
                     100 * mfu["ffnlab"], 100 * mfu["hf"]])
    prof_cfg = tcfg.replace(precision=precisions[-1])
    opt = make_optimizer(ours, prof_cfg)
    top = profile(lambda: train_step(ours, opt, [(x, y)], prof_cfg))
    best = max(out[p]["speedup"] for p in precisions)
    best_mfu = max(out[p]["mfu"]["ffnlab"] for p in precisions)
    out["meets_speedup_target"] = best >= TARGET_SPEEDUP
    out["meets_mfu_target"] = best_mfu >= TARGET_MFU
    out["profile"] = top
    out["tables"] = [
        {"title": f"training step, small preset ({n_ours:,} params; HF {n_theirs:,}), batch {batch}x{seq}, "
                  f"{torch.get_num_threads()} threads, load {out['load_average']:.1f}",
         "columns": ["precision", "ffnlab tok/s", "HF tok/s", "speedup", "HF+fused tok/s", "speedup", "peak GFLOP/s",
                     "ffnlab MFU %", "HF MFU %"],
         "rows": rows},
        {"title": f"ffnlab {precisions[-1]} step: top ops by self CPU time (per step)",
         "columns": ["op", "calls", "ms", "%"], "rows": top},
    ]
    out["notes"] = [f"targets: speedup >= {TARGET_SPEEDUP} ({'met' if out['meets_speedup_target'] else 'NOT met'}), "
                    f"MFU >= {TARGET_MFU:.0%} ({'met' if out['meets_mfu_target'] else 'NOT met'})",
                    f"MFU = tokens/s x {train_flops / 1e6:.1f} MFLOP/token (3x forward) / measured matmul peak",
                    "HF runs with multi-tensor (foreach) AdamW, and again with fused AdamW (HF+fused); "
                    "ffnlab uses fused AdamW"]
    return out
