"""Load a pretrained model offline and wrap it in its architecture's adapter.

    model = load("smollm2", dtype=torch.bfloat16)   # packaged; GGUF converted once, then cached
    model = load("smollm2", device="auto")          # on cuda if present, else mps, else cpu
    model = load("minilm")                          # packaged BERT checkpoint directory
    model = load("/path/to/gpt2")                   # any local HF checkpoint (safetensors)
    model = load("/path/to/big", device_map="auto") # split over the GPUs (and CPU) by accelerate

Nothing is downloaded: HF_HUB_OFFLINE is set before transformers is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ffnlab.device import resolve_device
from ffnlab.errors import FFNLabError, unknown
from ffnlab.pretrained.base import PretrainedModel
from ffnlab.pretrained.bert import BertAdapter
from ffnlab.pretrained.gpt2 import GPT2Adapter
from ffnlab.pretrained.llama import LlamaAdapter
from ffnlab.pretrained.sources import PACKAGED, cached, converted, gguf_info, packaged_path, resolve

ADAPTERS: dict[str, type[PretrainedModel]] = {"bert": BertAdapter, "gpt2": GPT2Adapter, "llama": LlamaAdapter}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _config(path: Path) -> dict:
    file = path / "config.json"
    if not file.exists():
        raise FFNLabError(f"{path} is not a checkpoint directory (no config.json)")
    try:
        cfg = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise FFNLabError(f"{file} is not valid JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise FFNLabError(f"{file} is not a JSON object")
    if cfg.get("model_type") not in ADAPTERS:
        raise unknown("architecture", cfg.get("model_type"), ADAPTERS)
    check_sizes(cfg, file)
    return cfg


# sizes a config.json may give, and the largest plausible value of each (a bigger one is a typo or a
# damaged file, and building it would take minutes or all memory)
SIZES = {"n_layer": 1024, "num_hidden_layers": 1024, "n_head": 1024, "num_attention_heads": 1024,
         "num_key_value_heads": 1024, "n_embd": 65536, "hidden_size": 65536, "n_inner": 1 << 20,
         "intermediate_size": 1 << 20, "vocab_size": 1 << 22, "n_positions": 1 << 22,
         "max_position_embeddings": 1 << 22, "type_vocab_size": 1 << 16}


def check_sizes(cfg: dict, file: Path) -> None:
    for key, most in SIZES.items():
        value = cfg.get(key)
        if value is None and key in ("n_inner", "num_key_value_heads"):
            continue  # None: derived from the other sizes
        if key in cfg and not (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= most):
            raise FFNLabError(f"{file}: {key} must be an integer between 1 and {most}, got {value!r}")


def _weight_names(path: Path) -> list[str]:
    """Tensor names in the checkpoint's safetensors files (headers only; never unpickles)."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        found = ", ".join(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth")) or "none"
        raise FFNLabError(f"{path} has no .safetensors weights (found: {found}); "
                          "ffnlab loads safetensors only, never pickled weights")
    names = []
    for f in files:
        try:
            with safe_open(str(f), "pt") as st:
                names += list(st.keys())
        except Exception as err:  # safetensors raises its own error type on a damaged header
            raise FFNLabError(f"{f} is not a readable safetensors file ({err})") from None
    return names


def _hf_class(cfg: dict, names: list[str]):
    """The HF class that matches the checkpoint's weights (a head only when its weights exist)."""
    import transformers as tf

    kind = cfg["model_type"]
    if kind == "bert":
        return tf.BertForMaskedLM if any(n.startswith("cls.predictions") for n in names) else tf.BertModel
    if kind == "gpt2":
        return tf.GPT2LMHeadModel
    return tf.LlamaForCausalLM


# what transformers raises for a config or checkpoint that makes no model
HF_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, AssertionError, ZeroDivisionError)


@contextlib.contextmanager
def _quiet_transformers(progress: bool = True) -> Iterator[None]:
    """Only transformers' errors (e.g. "unused weights: pooler" is expected, not news); bars if `progress`."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def checkpoint(source: str | os.PathLike, progress: bool = True) -> tuple[str, Path, dict]:
    """(name, checkpoint dir, meta) for a packaged name, a checkpoint directory or a GGUF file."""
    name, path = resolve(source)
    meta: dict = {"name": name, "source": str(path)}
    if path.is_file():
        if path.suffix != ".gguf":
            raise FFNLabError(f"{path}: expected a checkpoint directory or a .gguf file")
        path, record = converted(path, progress=progress)
        meta.update(dequantised_from=record["dequantised_from"], gguf_tensor_types=record["tensor_types"],
                    cache=str(path))
    return name, path, meta


def load(source: str | os.PathLike, dtype: torch.dtype | str | None = None, verify: bool = True,
         progress: bool = True, device: str | torch.device = "cpu",
         device_map: str | dict | None = None) -> PretrainedModel:
    """Load `source` (packaged name, checkpoint dir or GGUF file) and return its adapter, on `device`.

    `dtype` defaults to float32; `device` is cpu, cuda, mps or auto. `device_map` ("auto", or
    accelerate's {module: device}) instead spreads a model too big for one device over the GPUs and
    the CPU: accelerate's own hooks move each block's input to its device, ffnlab's hooks read every
    activation where it was computed (`meta["device_map"]` says where each block went). With
    `verify`, the hook identities are checked on a sample and a model whose hooks do not mean what
    they say is refused.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = resolve_device(device)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise unknown("dtype", dtype, DTYPES)
        dtype = DTYPES[dtype]
    t0 = time.perf_counter()
    name, path, meta = checkpoint(source, progress=progress)
    cfg = _config(path)
    cls = _hf_class(cfg, _weight_names(path))
    from transformers import AutoTokenizer

    try:
        with _quiet_transformers(progress):
            hf = cls.from_pretrained(path, dtype=dtype or torch.float32, use_safetensors=True, device_map=device_map)
            has_tokenizer = any((path / f).exists() for f in ("tokenizer.json", "vocab.txt", "vocab.json"))
            tokenizer = AutoTokenizer.from_pretrained(path) if has_tokenizer else None
    except HF_ERRORS as err:
        raise FFNLabError(f"cannot load {path}: {type(err).__name__}: {err}") from None
    meta.update(architecture=cfg["model_type"], dtype=str(hf.dtype).removeprefix("torch."))
    if device_map is not None:
        spread = getattr(hf, "hf_device_map", None) or {"": hf.device}  # none: it all fit on one device
        meta["device_map"] = {name: str(where) for name, where in spread.items()}
    model = ADAPTERS[cfg["model_type"]](hf if device_map is not None else hf.to(device), tokenizer, meta)
    model.meta["load_seconds"] = round(time.perf_counter() - t0, 2)
    if verify:
        model.meta["hook_check"] = model.verify()
    return model


def describe(source: str | os.PathLike) -> dict:
    """What `ffnlab models` shows: architecture, layers, d, FFN width, parameters.

    Parameters are counted on a model built on the meta device (no weights are read, tied
    weights count once).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name, path = resolve(source)
    row: dict = {"name": name, "source": str(path)}
    if path.is_file():
        if path.suffix != ".gguf":
            raise FFNLabError(f"{path}: expected a checkpoint directory or a .gguf file")
        from transformers import AutoConfig

        done = cached(path)
        if done is not None:
            info = done[1]
            hf_cfg = AutoConfig.from_pretrained(done[0])
        else:
            info = gguf_info(path)
            if info["architecture"] not in ADAPTERS:
                raise unknown("architecture", info["architecture"], ADAPTERS)
            hf_cfg = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        names = []
        row["weights"] = f"GGUF {info['quantisation']}" + (" (converted, cached)" if done else " (converted on first load)")
    else:
        _config(path)
        from transformers import AutoConfig

        try:
            with _quiet_transformers():
                hf_cfg = AutoConfig.from_pretrained(path)
        except HF_ERRORS as err:
            raise FFNLabError(f"{path}: cannot read config.json: {type(err).__name__}: {err}") from None
        names = _weight_names(path)
        row["weights"] = "safetensors"
    cls = _hf_class(hf_cfg.to_dict(), names)
    try:
        with torch.device("meta"), _quiet_transformers():
            hf = cls(hf_cfg)
        model = ADAPTERS[hf_cfg.model_type](hf, None, {"name": name})
    except HF_ERRORS as err:
        raise FFNLabError(f"{path}: its config does not make a model: {type(err).__name__}: {err}") from None
    row.update(architecture=hf_cfg.model_type, hf_class=cls.__name__, layers=model.n_layers,
               d_model=model.d_model, d_ff=model.d_ff, vocab=model.vocab_size, params=model.n_params())
    return row


def available() -> list[dict]:
    """The packaged models installed here, described (or why not)."""
    rows = []
    for name, p in PACKAGED.items():
        try:
            packaged_path(name)
            rows.append(describe(name))
        except FFNLabError as err:
            rows.append({"name": name, "error": str(err), "title": p.title})
    return rows
