"""Load a pretrained model offline and wrap it in its architecture's adapter.

    model = load("smollm2", dtype=torch.bfloat16)   # packaged; GGUF converted once, then cached
    model = load("smollm2", device="auto")          # on cuda if present, else mps, else cpu
    model = load("minilm")                          # packaged BERT checkpoint directory
    model = load("/path/to/gpt2")                   # any local HF checkpoint (safetensors)
    model = load("Qwen/Qwen2.5-0.5B")               # a model id in the local Hugging Face cache
    model = load("gemma-3-1b-it-Q8_0.gguf")         # a GGUF file of any family transformers converts
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
from ffnlab.pretrained.families import check_gguf_architecture, family_of, supported_types
from ffnlab.pretrained.sources import PACKAGED, cached, converted, gguf_info, packaged_path, resolve

# every supported HF model_type -> the adapter (one class, driven by the family's spec)
ADAPTERS: dict[str, type[PretrainedModel]] = {t: PretrainedModel for t in supported_types()}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _config(path: Path) -> dict:
    """config.json of a checkpoint directory, refused unless its architecture has a spec (nothing else is read)."""
    file = path / "config.json"
    if not file.exists():
        raise FFNLabError(f"{path} is not a checkpoint directory (no config.json)")
    try:
        cfg = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise FFNLabError(f"{file} is not valid JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise FFNLabError(f"{file} is not a JSON object")
    family_of(cfg.get("model_type"))
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


def hf_class(model_type: str, names: list[str] | None):
    """The HF class for `model_type`: decoders with their LM head (tied or not); encoders with their MLM
    head only when the checkpoint's weight `names` hold one (None: with the head)."""
    import transformers as tf
    from transformers.models.auto import modeling_auto as auto

    fam = family_of(model_type)
    if fam.causal:
        return getattr(tf, auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])
    head = names is None or any(n.startswith(fam.head_prefixes) for n in names)
    table = auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES if head else auto.MODEL_MAPPING_NAMES
    return getattr(tf, table[model_type])


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
    """(name, checkpoint dir, meta) for a packaged name, a checkpoint directory, a GGUF file or a cached model id."""
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
    """Load `source` and return its adapter, on `device`.

    `source`: a packaged name, a checkpoint directory, a GGUF file, or a model id (`Qwen/Qwen2.5-0.5B`,
    `org/name@revision`) in the local Hugging Face cache. `dtype` defaults to float32; `device` is cpu,
    cuda, mps or auto. An architecture without a spec is refused before any weights are read, and a
    checkpoint whose weights do not cover the model's parameters is refused (never random-initialised).
    `device_map` ("auto", or accelerate's {module: device}) instead spreads a model too big for one device
    over the GPUs and the CPU: accelerate's own hooks move each block's input to its device, ffnlab's hooks
    read every activation where it was computed (`meta["device_map"]` says where each block went).
    With `verify`, the hook identities are checked on a sample and a model whose hooks do not mean what
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
    cls = hf_class(cfg["model_type"], _weight_names(path))
    from transformers import AutoTokenizer

    try:
        with _quiet_transformers(progress):
            hf, info = cls.from_pretrained(path, dtype=dtype or torch.float32, use_safetensors=True,
                                           output_loading_info=True, device_map=device_map)
    except HF_ERRORS as err:
        raise FFNLabError(f"cannot load {path}: {type(err).__name__}: {err}") from None
    _check_coverage(path, info)
    tokenizer, why = None, "no tokenizer files"
    if any((path / f).exists() for f in ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")):
        try:
            with _quiet_transformers(progress):
                tokenizer = AutoTokenizer.from_pretrained(path)
        except (*HF_ERRORS, ImportError) as err:  # e.g. a sentencepiece-only tokenizer without sentencepiece
            first = (str(err).strip().splitlines() or [""])[0][:200]
            why = f"its tokenizer does not load ({type(err).__name__}: {first})"
    meta.update(architecture=cfg["model_type"], dtype=str(hf.dtype).removeprefix("torch."))
    if tokenizer is None:
        meta["no_tokenizer"] = why
    if device_map is not None:
        spread = getattr(hf, "hf_device_map", None) or {"": hf.device}  # none: it all fit on one device
        meta["device_map"] = {name: str(where) for name, where in spread.items()}
    model = PretrainedModel(hf if device_map is not None else hf.to(device), tokenizer, meta)
    model.meta["load_seconds"] = round(time.perf_counter() - t0, 2)
    if verify:
        model.meta["hook_check"] = model.verify()
    return model


def _check_coverage(path: Path, info: dict) -> None:
    """Refuse a checkpoint that leaves parameters to random initialisation (or of the wrong shape)."""
    missing = sorted(info.get("missing_keys") or [])
    mismatched = info.get("mismatched_keys") or []
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FFNLabError(f"{path}: its weights do not cover the model: {', '.join(missing[:3])}{more} missing "
                          "(they would be random); a checkpoint must hold every parameter")
    if mismatched:
        key = mismatched[0][0] if isinstance(mismatched[0], (tuple, list)) else mismatched[0]
        raise FFNLabError(f"{path}: weight {key} has another shape than config.json gives")


def meta_model(hf_config, names: list[str] | None = None, name: str | None = None) -> PretrainedModel:
    """The adapter over `hf_config`'s model built on the meta device: exact shapes, no weights, no memory."""
    cls = hf_class(hf_config.model_type, names)
    try:
        with torch.device("meta"), _quiet_transformers():
            hf = cls(hf_config)
    except HF_ERRORS as err:
        raise FFNLabError(f"{name or hf_config.model_type}: its config does not make a model: "
                          f"{type(err).__name__}: {err}") from None
    return PretrainedModel(hf, None, {"name": name or hf_config.model_type})


def open_meta(source: str | os.PathLike) -> tuple[dict, PretrainedModel]:
    """(where it came from, the adapter on the meta device) for any loadable source; reads configs and
    headers only, never weights (a GGUF file that was not converted yet gives its config from its header)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig

    name, path = resolve(source)
    row: dict = {"name": name, "source": str(path)}
    names: list[str] | None = []
    try:
        with _quiet_transformers():
            if path.is_file():
                if path.suffix != ".gguf":
                    raise FFNLabError(f"{path}: expected a checkpoint directory or a .gguf file")
                done = cached(path)
                info = done[1] if done else gguf_info(path)
                check_gguf_architecture(info["architecture"])
                hf_cfg = AutoConfig.from_pretrained(done[0]) if done else \
                    AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
                row["weights"] = f"GGUF {info['quantisation']}" + (" (converted, cached)" if done
                                                                   else " (converted on first load)")
            else:
                _config(path)
                hf_cfg = AutoConfig.from_pretrained(path)
                names = _weight_names(path)
                row["weights"] = "safetensors"
    except HF_ERRORS as err:
        raise FFNLabError(f"{path}: cannot read its config: {type(err).__name__}: {err}") from None
    model = meta_model(hf_cfg, names, name)
    row.update(architecture=hf_cfg.model_type, family=model.family.name, hf_class=type(model.hf).__name__)
    return row, model


def describe(source: str | os.PathLike) -> dict:
    """What `ffnlab models` shows: architecture, layers, d, FFN width, parameters.

    Parameters are counted on a model built on the meta device (no weights are read, tied
    weights count once).
    """
    row, model = open_meta(source)
    row.update(layers=model.n_layers, d_model=model.d_model, d_ff=model.d_ff, vocab=model.vocab_size,
               params=model.n_params())
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
