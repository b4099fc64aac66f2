"""`ffnlab train`: train a preset (or a config file's model) on a corpus and record the run.

`--nproc N` trains with DistributedDataParallel in N processes on this machine (it launches
`torchrun`'s engine); on a multi-GPU node, `torchrun --nproc-per-node N -m ffnlab train ...` does
the same, and across nodes torchrun's own rendezvous options apply.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import warnings
from pathlib import Path
from typing import Any

from ffnlab import distributed as dist
from ffnlab.commands._options import add_device_option, add_nproc_option, relaunch
from ffnlab.errors import FFNLabError
from ffnlab.model import ModelConfig, preset
from ffnlab.model.config import ffn_from_dict
from ffnlab.results import results_dir

NAME = "train"
HELP = "train a model on a text corpus (default: the packaged Shakespeare plays)"

# flag -> TrainConfig field; flags left unset keep the config file's (or the default) value
TRAIN_FLAGS = {"steps": int, "batch_size": int, "seq_len": int, "lr": float, "min_lr": float, "warmup": int,
               "hold": float, "weight_decay": float, "grad_clip": float, "grad_accum": int, "precision": str,
               "eval_every": int, "eval_batches": int, "checkpoint_every": int, "seed": int}
SECTIONS = ("model", "train", "data")
DATA_SETTINGS = {"path": str, "tokenizer": str, "vocab_size": int}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON or TOML file with [model], [train] and [data] sections; flags override it")
    p.add_argument("--preset", help="model preset (default: small, or the config file's model.preset)")
    p.add_argument("--ffn", help="FFN kind, e.g. mlp, swiglu, moe, none")
    p.add_argument("--data", help="corpus: a text file, directory or glob (default: packaged Shakespeare)")
    p.add_argument("--tokenizer", help="bpe (default), char, or a model directory with tokenizer.json")
    p.add_argument("--vocab-size", type=int, help="BPE vocabulary size (default 4096)")
    for flag, kind in TRAIN_FLAGS.items():
        p.add_argument(f"--{flag.replace('_', '-')}", type=kind, dest=flag)
    p.add_argument("--name", default="", help="a name for the run in the store")
    p.add_argument("--out", help="run directory (default: RESULTS/runs/NAME-or-preset-ffn-seed)")
    p.add_argument("--results", help="results directory holding the store (default: $FFNLAB_RESULTS or ./results)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--reuse", action="store_true", help="load a finished identical run from the store if there is one")
    p.add_argument("--threads", type=int, help="torch CPU threads (on a busy shared CPU, 1 can be several times faster)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_option(p)
    add_nproc_option(p, "train with DistributedDataParallel in N processes (gloo on CPU, NCCL on GPUs); "
                        "--batch-size is the global batch, a multiple of N")


def read_config(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FFNLabError(f"config file {path!r} does not exist")
    try:
        if p.suffix == ".json":
            cfg = json.loads(p.read_text())
        elif p.suffix == ".toml":
            cfg = tomllib.loads(p.read_text())
        else:
            raise FFNLabError(f"config file {path!r} must end in .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise FFNLabError(f"cannot parse config file {path!r}: {str(err).splitlines()[0]}") from None
    if not isinstance(cfg, dict) or set(cfg) - set(SECTIONS):
        extra = sorted(set(cfg) - set(SECTIONS)) if isinstance(cfg, dict) else ["(not a table)"]
        raise FFNLabError(f"config file {path!r} has unknown section {extra[0]!r}; sections: {', '.join(SECTIONS)}")
    for name, section in cfg.items():
        if not isinstance(section, dict):
            raise FFNLabError(f"config file {path!r}: [{name}] must be a table of settings, got {section!r}")
    data = cfg.get("data", {})
    for key, kind in DATA_SETTINGS.items():
        if key in data and not (isinstance(data[key], kind) and not isinstance(data[key], bool)):
            what = "an integer" if kind is int else "a string"
            raise FFNLabError(f"config file {path!r}: data.{key} must be {what}, got {data[key]!r}")
    return cfg


def preset_name(args: argparse.Namespace, file: dict[str, Any]) -> str:
    return args.preset or file.get("model", {}).get("preset", "small")


def build_configs(args: argparse.Namespace, file: dict[str, Any], vocab_size: int) -> tuple[ModelConfig, Any]:
    from ffnlab.train import TrainConfig

    model = dict(file.get("model", {}))
    base = preset(preset_name(args, file))
    model.pop("preset", None)
    if isinstance(model.get("ffn"), dict):  # a partial table: the preset's FFN fills in the rest
        model["ffn"] = ffn_from_dict({**dataclasses.asdict(base.ffn), **model["ffn"]})
    model.setdefault("vocab_size", vocab_size)
    cfg = ModelConfig.from_dict({**base.to_dict(), **model})
    if args.ffn:
        cfg = cfg.with_ffn(kind=args.ffn)
    train = dict(file.get("train", {}))
    train.update({k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None})
    train.setdefault("seq_len", min(TrainConfig().seq_len, cfg.max_seq_len))  # a default that fits the model
    return cfg, TrainConfig.from_dict(train)


def run(args: argparse.Namespace) -> int:
    with dist.process_group(args.device) as device:
        return _run(args, device)


def _run(args: argparse.Namespace, device) -> int:
    from ffnlab.data import prepare_data
    from ffnlab.store import Store
    from ffnlab.train import train, train_or_reuse

    import torch

    if args.threads is not None:
        if args.threads < 1:
            raise FFNLabError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    if not args.out and args.name and (Path(args.name).name != args.name or args.name in (".", "..")):
        raise FFNLabError(f"--name {args.name!r} names a run, not a path; leave out '/' (or pass --out)")
    file = read_config(args.config) if args.config else {}
    data_cfg = dict(file.get("data", {}))
    extra = sorted(set(data_cfg) - set(DATA_SETTINGS))
    if extra:
        raise FFNLabError(f"unknown data setting {extra[0]!r}; known: {', '.join(DATA_SETTINGS)}")
    vocab_size = args.vocab_size if args.vocab_size is not None else data_cfg.get("vocab_size", 4096)
    if vocab_size < 1:
        raise FFNLabError(f"vocab_size must be a positive integer, got {vocab_size}")
    root = results_dir(args.results)
    with warnings.catch_warnings(record=True) as caught, dist.main_first():  # rank 0 builds the token cache
        warnings.simplefilter("always")
        data = prepare_data(args.data or data_cfg.get("path"), args.tokenizer or data_cfg.get("tokenizer", "bpe"),
                            vocab_size, cache_dir=root / "cache")
    for w in caught if dist.is_main() else []:
        print(f"ffnlab train: note: {w.message}")
    model_cfg, train_cfg = build_configs(args, file, data.vocab_size)
    nproc = args.nproc or dist.world()
    if train_cfg.batch_size % nproc:
        raise FFNLabError(f"--batch-size {train_cfg.batch_size} does not split evenly over {nproc} processes; "
                          f"use a multiple of {nproc}")
    label = args.name or f"{preset_name(args, file)}-{model_cfg.ffn.kind}-s{train_cfg.seed}"
    out = Path(args.out) if args.out else root / "runs" / label
    if args.nproc and not dist.launched():
        return relaunch(args)  # everything above checked once, here, before N processes start
    fn = train_or_reuse if args.reuse else train
    with dist.main_first():
        store = Store(root)  # every rank reads it (the same --reuse decision on all); rank 0 alone writes
    result = fn(model_cfg, train_cfg, data, out, store=store, name=label, progress=not args.quiet,
                resume=not args.no_resume, device=device)
    if not dist.is_main():
        return 0
    how = "reused finished run" if result.reused else "trained"
    procs = f", {dist.world()} processes" if dist.world() > 1 else ""
    print(f"{how} {label}: run {result.run_id}, {result.steps} steps{procs}, val loss {result.val_loss:.4f} nats "
          f"(ppl {result.val_ppl:.1f}), {result.tokens_per_second:,.0f} tokens/s, checkpoint in {result.out_dir}")
    ngram = result.summary.get("ngram_val")
    if ngram:
        counts = ", ".join(f"{k} {v:.4f}" for k, v in ngram.items())
        gap = result.summary["ngram_gap"]
        print(f"  n-gram baselines on validation: {counts}; the model is {abs(gap):.4f} nats "
              f"{'below' if gap > 0 else 'above'} the best")
    return 0
