"""The replacement ladder: per layer, what can each FFN be replaced by, on one scale.

    res = ladder(model, fit_windows, eval_windows, LadderConfig(layers=(0, 5), rungs=("affine", "topk-10")),
                 out="results/ladder/smollm2")
    res.layers[5]["rungs"]["affine"]["recovered"]      # fraction of loss recovered, with a bootstrap CI

Each rung (`ffnlab.analysis.rungs`) replaces one layer's FFN output; it is fitted on the fit
windows and scored on disjoint eval windows by

    fraction of loss recovered   (L_zero - L_rung) / (L_zero - L_orig)   (1: as good as the FFN)
    KL(original || replaced)     next-token distributions, nats per token
    R²                           of the FFN output at the replaced layer
    FLOPs, parameters            per token, relative to the original FFN

with 95% intervals from a bootstrap over eval windows. Models without a causal head are scored
by a distortion that is 0 for the original model: KL to the original distribution (an MLM
head), else 1 - cosine of the mean-pooled final states (sentence encoders such as MiniLM).

How it stays cheap: the fit is one streaming pass over the fit windows that fills a bounded
`LayerFit` per layer (second moments, neuron statistics; `add`/`merge` for shards) and trains
every layer's transcoder as the activations pass. Evaluation caches, for every eval batch, the
stream entering each layer (in the model's dtype) and the arguments its blocks were called
with, then runs only the blocks from the replaced one upward. Finished layers are written to
`out` as they complete; a rerun with the same settings and code resumes, and one with other
settings is refused, never silently mixed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ffnlab import distributed as dist
from ffnlab.analysis.replay import (R2, Scorer, applied, bootstrap_index, cache_streams, ffn_matrices,
                                    interval, output, run_from)
from ffnlab.analysis.rungs import LayerFit, Rung, collective_device, default_rungs, ffn_cost, fit_edit, parse_rung
from ffnlab.analysis.transcoder import Transcoder, TranscoderTrainer
from ffnlab.errors import FFNLabError, check_field_types
from ffnlab.model.hooks import hooks
from ffnlab.results import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class LadderConfig:
    """What to replace and how to fit it. `rungs`/`layers`/`last_n` None: the full ladder, all layers."""

    rungs: tuple[str, ...] | None = None
    layers: tuple[int, ...] | None = None
    last_n: tuple[int, ...] | None = None  # cumulative drops of the last n FFNs (Gromov et al. 2024)
    batch_size: int = 8
    ridge: float = 1e-6
    transcoder_width: int | None = None  # default 2 F
    transcoder_k: int = 32
    transcoder_epochs: int = 4
    transcoder_lr: float = 3e-3
    transcoder_batch: int = 128  # tokens a step: several steps per forward, the forward being the cost
    bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("batch_size", "transcoder_k", "transcoder_epochs", "transcoder_batch", "bootstrap"):
            if getattr(self, name) < 1:
                raise FFNLabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.transcoder_width is not None and self.transcoder_width < self.transcoder_k:
            raise FFNLabError(f"transcoder_width must be at least transcoder_k={self.transcoder_k}")
        if not self.ridge >= 0:
            raise FFNLabError(f"ridge must be >= 0, got {self.ridge}")
        for r in self.rungs or ():
            parse_rung(r)

    def fit_key(self) -> dict[str, Any]:
        """The settings stored fits and scores depend on (not which layers or rungs; the batch size sets which
        windows a resample draws from)."""
        return {k: getattr(self, k) for k in ("ridge", "transcoder_width", "transcoder_k", "transcoder_epochs",
                                              "transcoder_lr", "transcoder_batch", "seed", "batch_size")}


VERSION = 1  # bump when what a stored ladder record means changes
FREE = ("zero", "resample", "drop-attn")  # rungs that need no fit


def last_n_default(n_layers: int) -> tuple[int, ...]:
    """Cumulative drops of the last n FFNs: every n up to 8 layers, then a geometric sweep."""
    if n_layers <= 8:
        return tuple(range(1, n_layers + 1))
    out = sorted({1, 2, 3, 4, *(round(n_layers * f) for f in (0.2, 0.3, 0.4, 0.5, 0.75, 1.0))})
    return tuple(n for n in out if 1 <= n <= n_layers)


# -- the fit pass ------------------------------------------------------------------------------
@torch.no_grad()
def fit_layers(model, batches: list[Tensor], layers: list[int], cfg: LadderConfig, coact: bool, transcoders: bool,
               progress: bool = False,
               calibrate: Tensor | None = None) -> tuple[dict[int, LayerFit], dict[int, Transcoder]]:
    """One streaming pass over the fit batches fills every layer's `LayerFit` and steps its transcoder;
    `cfg.transcoder_epochs - 1` more passes train the transcoders only. Memory does not grow with tokens.

    The fits' thresholds come from the first batch, or from `calibrate` (a batch of tokens, one more
    forward): shards of one fit pass, merged with `LayerFit.merge`, are calibrated on the same batch.

    Under torch.distributed, rank r streams batches r, r + N, ... of the N ranks, all with rank 0's
    thresholds from the first batch, and every rank returns the fits merged over all ranks (`LayerFit.gathered`):
    the single-process fit, its counts and maxima exactly, its sums to float rounding. Transcoders,
    trained by SGD over the batches in order, do not shard: they are fitted in one process."""
    d = model.d_model
    widths = {i: ffn_matrices(model, i)["down"].shape[1] for i in layers}
    seq_len = max(b.shape[1] for b in batches)
    if dist.world() > 1:
        if transcoders:
            raise FFNLabError("the transcoder rung trains over the fit batches in order and does not shard over "
                              "processes: fit it in one process (without torchrun)")
        calibrate = batches[0] if calibrate is None else calibrate
        batches = batches[dist.rank()::dist.world()]
    fits = {i: LayerFit.zeros(d, widths[i], seq_len, moe=coact) for i in layers}
    trainers = {i: TranscoderTrainer(Transcoder(d, cfg.transcoder_width or 2 * widths[i], cfg.transcoder_k,
                                                seed=cfg.seed * 1000 + i).to(_device(model)), cfg.transcoder_lr)
                for i in layers} if transcoders else {}
    epochs = cfg.transcoder_epochs if transcoders else 1
    seen: dict[str, Tensor] = {}
    stats, calibrating = True, False

    def edits(i: int) -> dict:
        b = f"blocks.{i}.ffn."

        def keep(key: str):
            def fn(act: Tensor) -> None:
                seen[f"{i}.{key}"] = act
            return fn

        def at_out(y: Tensor) -> None:
            x = seen[f"{i}.x"]
            if calibrating:
                fits[i].calibrate(seen[f"{i}.post"], y)
                return
            if stats:
                fits[i].add(x, seen[f"{i}.pre"], seen[f"{i}.post"], y)
            if i in trainers:
                x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
                for start in range(0, len(x2), cfg.transcoder_batch):
                    trainers[i].step(x2[start:start + cfg.transcoder_batch], y2[start:start + cfg.transcoder_batch])
        return {b + "hook_in": keep("x"), b + "hook_pre": keep("pre"), b + "hook_post": keep("post"),
                b + "hook_out": at_out}

    all_edits = {k: v for i in layers for k, v in edits(i).items()}
    bar = _bar(progress and dist.is_main(), epochs * len(batches), "ladder fit", "batch")
    with hooks(model, all_edits):
        if calibrate is not None:
            calibrating = True
            model(calibrate.to(_device(model)))
            seen.clear()
            calibrating = False
            if dist.world() > 1:  # rank 0's thresholds on every rank: equal by construction
                comm = collective_device()
                for fit in fits.values():
                    fit.eps = dist.broadcast(fit.eps.to(comm)).cpu()
                    fit.massive_bar = dist.broadcast(fit.massive_bar.to(comm)).cpu()
        for epoch in range(epochs):
            stats = epoch == 0
            for tokens in batches:
                model(tokens)
                seen.clear()
                bar.update()
                if trainers:
                    bar.set_postfix(r2=f"{sum(t.last_r2 for t in trainers.values()) / len(trainers):.3f}")
    bar.close()
    if dist.world() > 1:
        fits = {i: fit.gathered() for i, fit in fits.items()}
    return fits, {i: t.tc.eval() for i, t in trainers.items()}


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _bar(progress: bool, total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not progress, leave=False)


# -- where a ladder lives on disk ----------------------------------------------------------------
def ladder_code() -> str:
    """The fingerprint of the code a stored ladder depends on (this module and what it imports)."""
    from ffnlab.fingerprint import code_fingerprint

    return code_fingerprint(__name__)


_WORDS = {"fit": "fit tokens", "eval": "eval tokens", "fit_shape": "", "eval_shape": "", "params": "model",
          "dtype": "model dtype"}  # manifest keys as a user reads them ("" = said by another key)


class LadderStore:
    """`out/manifest.json` (settings, code), `fits/layer-I.safetensors`, `layers/layer-I.json`,
    `orig.json`, `drops.json`; every file written atomically, each layer as soon as it is done."""

    def __init__(self, out: str | Path, key: dict[str, Any], fresh: bool = False):
        self.root = Path(out)
        self.manifest = {"version": VERSION, "key": key, "code": ladder_code()}
        path = self.root / "manifest.json"
        if path.exists() and not fresh:
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise FFNLabError(f"{str(path)!r} is damaged ({err}); run with --fresh to start over") from None
            if old != json.loads(json.dumps(self.manifest)):
                what = [k for k in ("version", "code") if old.get(k) != self.manifest[k]]
                now = json.loads(json.dumps(key))
                changed = [k for k in key if old.get("key", {}).get(k) != now.get(k)]
                what += [w for w in dict.fromkeys(_WORDS.get(k, k.replace("_", " ")) for k in changed) if w]
                raise FFNLabError(f"{str(self.root)!r} holds a ladder made with other {', '.join(what) or 'settings'}; "
                                  "pass --fresh (Python: fresh=True) to replace it, or choose another --out")
        elif fresh and self.root.exists():
            for sub in ("fits", "layers"):
                shutil.rmtree(self.root / sub, ignore_errors=True)
            for f in ("orig.json", "drops.json", "manifest.json"):
                (self.root / f).unlink(missing_ok=True)
        atomic_write_text(path, json.dumps(self.manifest, indent=1, default=str))

    def read(self, name: str) -> dict | None:
        path = self.root / name
        return json.loads(path.read_text()) if path.exists() else None

    def write(self, name: str, data: dict) -> None:
        atomic_write_text(self.root / name, json.dumps(data, default=_jsonable))

    def fit(self, layer: int, coact: bool, transcoder: bool) -> tuple[LayerFit, Transcoder | None] | None:
        """A stored fit of `layer` that has what is asked for (co-activations, a transcoder), else None."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.root / "fits" / f"layer-{layer}.safetensors"
        if not path.exists():
            return None
        try:
            state = load_file(path)
        except (SafetensorError, OSError) as err:
            raise FFNLabError(f"{str(path)!r} is damaged ({err}); run with --fresh") from None
        tc_state = {k.removeprefix("tc."): v for k, v in state.items() if k.startswith("tc.")}
        if (coact and "coact" not in state) or (transcoder and not tc_state):
            return None
        fit = LayerFit.from_state({k: v for k, v in state.items() if not k.startswith("tc.")})
        tc = None
        if tc_state:
            width, d = tc_state["w_dec"].shape
            tc = Transcoder(d, width, int(tc_state.pop("k").item()))
            tc.load_state_dict(tc_state)
        return fit, tc

    def save_fit(self, layer: int, fit: LayerFit, tc: Transcoder | None) -> None:
        from safetensors.torch import save

        state = {k: v.contiguous().cpu() for k, v in fit.state_dict().items()}
        if tc is not None:
            state.update({f"tc.{k}": v.detach().cpu().contiguous() for k, v in tc.state_dict().items()})
            state["tc.k"] = torch.tensor(tc.k)
        atomic_write_bytes(self.root / "fits" / f"layer-{layer}.safetensors", save(state))


def _jsonable(o: Any) -> Any:
    if isinstance(o, Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def tokens_sha(t: Tensor) -> str:
    return hashlib.sha256(t.cpu().to(torch.int64).numpy().tobytes()).hexdigest()[:16]


# -- the ladder ------------------------------------------------------------------------------------
def _batches(windows: Tensor, size: int, device: torch.device) -> list[Tensor]:
    """Batches of `size` windows; a last batch of one window joins the one before (resample needs two)."""
    parts = list(windows.split(size))
    if len(parts) > 1 and parts[-1].shape[0] == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return [p.to(device) for p in parts]


def _stream_stats(cache, layer: int) -> dict[str, float]:
    """Massive activations (Sun et al. 2024) in the stream entering `layer`: the largest |entry| against the
    median |entry|, and the share of tokens holding an entry above 100x the median."""
    h = torch.cat([s[layer].float().reshape(-1, s[layer].shape[-1]) for s in cache.streams]).abs()
    med = float(h.flatten()[:: max(1, h.numel() // 2_000_000)].median())  # a strided sample: median of millions
    top = float(h.max())
    return {"max_abs": top, "median_abs": med, "ratio": top / max(med, 1e-30),
            "massive_tokens": float((h.max(-1).values > 100 * med).double().mean())}


def _check_replay(model, cache, start: int, name: str) -> None:
    ref = output(model, cache.final[0]).float()
    err = float((run_from(model, cache, 0, start).float() - ref).abs().max() / ref.abs().max().clamp(min=1))
    if not err <= 1e-3:
        raise FFNLabError(f"replaying {name}'s blocks from a cached stream does not reproduce its output (relative "
                          f"error {err:.2g}); the ladder cannot run on this model")


@torch.no_grad()
def ladder(model, fit_windows: Tensor, eval_windows: Tensor, cfg: LadderConfig = LadderConfig(),
           out: str | Path | None = None, fresh: bool = False, progress: bool = True, name: str = "model") -> dict:
    """Fit every rung of `cfg` on `fit_windows` (N_f, T) and score it on `eval_windows` (N_e, T), per layer.

    Returns `summarise(...)` of everything stored in `out` for these settings (a temporary directory
    when `out` is None: then nothing is resumable). Layers finished by an earlier, interrupted call
    with the same settings and code are read back, not recomputed.
    """
    import tempfile

    for label, w in (("fit", fit_windows), ("eval", eval_windows)):
        if w.dim() != 2 or w.shape[0] < 2:
            raise FFNLabError(f"{label} windows must be (N, T) token ids with N >= 2, got shape {tuple(w.shape)}")
    n_layers, d = model.n_layers, model.d_model
    layers = sorted(set(cfg.layers)) if cfg.layers is not None else list(range(n_layers))
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise FFNLabError(f"layer {bad[0]} does not exist; {name} has layers 0..{n_layers - 1}")
    names = list(cfg.rungs) if cfg.rungs is not None else default_rungs(d, ffn_matrices(model, 0)["down"].shape[1])
    rungs = [parse_rung(n) for n in dict.fromkeys(["zero", *names])]  # zero: the scale's other end
    last_n = cfg.last_n if cfg.last_n is not None else last_n_default(n_layers)
    if any(not 1 <= n <= n_layers for n in last_n):
        raise FFNLabError(f"last_n must lie in 1..{n_layers}, got {list(last_n)}")
    device = _device(model)
    key = {"model": name, "params": sum(p.numel() for p in model.parameters()),
           "dtype": str(next(model.parameters()).dtype), "fit": tokens_sha(fit_windows),
           "eval": tokens_sha(eval_windows), "fit_shape": list(fit_windows.shape),
           "eval_shape": list(eval_windows.shape), **cfg.fit_key()}
    tmp = tempfile.TemporaryDirectory(prefix="ffnlab-ladder-") if out is None else None
    store = LadderStore(out if out is not None else tmp.name, key, fresh)
    try:
        records = {i: store.read(f"layers/layer-{i}.json") or {"layer": i, "rungs": {}} for i in layers}
        pending = {i: [r for r in rungs if r.name not in records[i]["rungs"]] for i in layers}
        pending = {i: rs for i, rs in pending.items() if rs}
        drops = store.read("drops.json") or {"last_n": {}}
        todo_n = [n for n in last_n if str(n) not in drops["last_n"]]
        orig = store.read("orig.json")
        if pending or todo_n or orig is None:
            fits, tcs = _fits(model, store, pending, fit_windows, cfg, device, progress)
            _evaluate(model, store, records, pending, drops, todo_n, fits, tcs, eval_windows, cfg, device, progress,
                      name)
            orig = store.read("orig.json")
        summary = summarise(records, orig, drops, last_n, [r.name for r in rungs], cfg, key)
        warnings = []
        if fit_windows.numel() < 8 * d and any(r.family in ("affine", "affine-robust", "rank", "moe") for r in rungs):
            warnings.append(f"{fit_windows.numel()} fit tokens for a {d}-wide affine map (< 8 D): the linear fits "
                            "overfit the fit split and understate what a linear map can do")
        result = {"metric": Scorer(model).metric, "warnings": warnings, **summary}
        if out is not None:
            store.write("summary.json", result)  # what readers of a finished ladder (the explorer) use
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def _fits(model, store: LadderStore, pending: dict[int, list[Rung]], fit_windows: Tensor, cfg: LadderConfig,
          device: torch.device, progress: bool) -> tuple[dict[int, LayerFit], dict[int, Transcoder]]:
    """Stored fits where they hold what the pending rungs need; one fit pass for the other layers."""
    need = sorted(i for i, rs in pending.items() if any(r.family not in FREE for r in rs))
    coact = any(r.family == "moe" for rs in pending.values() for r in rs)
    want_tc = any(r.family == "transcoder" for rs in pending.values() for r in rs)
    fits: dict[int, LayerFit] = {}
    tcs: dict[int, Transcoder] = {}
    missing = []
    for i in need:
        got = store.fit(i, coact, want_tc)
        if got is None:
            missing.append(i)
        else:
            fits[i] = got[0]
            if got[1] is not None:
                tcs[i] = got[1].to(device)
    if missing:
        new_fits, new_tcs = fit_layers(model, _batches(fit_windows, cfg.batch_size, device), missing, cfg, coact,
                                       want_tc, progress)
        for i in missing:
            store.save_fit(i, new_fits[i], new_tcs.get(i))
        fits.update(new_fits)
        tcs.update(new_tcs)
    return fits, tcs


def _evaluate(model, store: LadderStore, records: dict, pending: dict[int, list[Rung]], drops: dict,
              todo_n: list[int], fits: dict, tcs: dict, eval_windows: Tensor, cfg: LadderConfig,
              device: torch.device, progress: bool, name: str) -> None:
    n_layers = model.n_layers
    batches = _batches(eval_windows, cfg.batch_size, device)
    starts = set(pending) | {n_layers - n for n in todo_n}
    cache = cache_streams(model, batches, starts or {n_layers - 1})
    _check_replay(model, cache, min(starts or {n_layers - 1}), name)
    scorer = Scorer(model)
    if store.read("orig.json") is None:
        orig = [scorer.score(output(model, cache.final[b]), scorer.reference(cache.final[b]), t)[0]
                for b, t in enumerate(batches)]
        store.write("orig.json", {"loss": torch.cat(orig).tolist()})
    bar = _bar(progress, (sum(len(rs) for rs in pending.values()) + len(todo_n)) * len(batches), "ladder eval",
               "pass")  # one pass: one rung on one batch, from the replaced layer up
    for i, rs in sorted(pending.items()):
        ffn = ffn_matrices(model, i)
        values = ffn["down"].T.detach()
        edits = {r.name: None if r.family == "drop-attn" else
                 fit_edit(r, fits.get(i), ffn, tcs.get(i), cfg.ridge, cfg.seed * 1000 + i) for r in rs}
        loss: dict[str, list[Tensor]] = {r.name: [] for r in rs}
        kl: dict[str, list[Tensor]] = {r.name: [] for r in rs}
        r2 = {r.name: R2() for r in rs}
        for b, tokens in enumerate(batches):
            ref = scorer.reference(cache.final[b])
            for r in rs:
                with applied(model, i, edits[r.name], values, r2[r.name]):
                    out = run_from(model, cache, b, i)
                lo, k = scorer.score(out, ref, tokens)
                loss[r.name].append(lo.cpu())
                if k is not None:
                    kl[r.name].append(k.cpu())
                bar.update()
            bar.set_postfix(layer=i)
        flops, params = ffn_cost(ffn)
        for r in rs:
            e = edits[r.name]
            records[i]["rungs"][r.name] = {
                "loss": torch.cat(loss[r.name]).tolist(), "kl": torch.cat(kl[r.name]).tolist() if kl[r.name] else None,
                "r2": r2[r.name].value(), "flops": None if e is None else e.flops / flops,
                "params": None if e is None else e.params / params}
        if i in fits:
            records[i]["neurons"] = fits[i].neuron_summary()
        records[i]["stream"] = _stream_stats(cache, i)
        store.write(f"layers/layer-{i}.json", records[i])
    zero = torch.zeros_like
    for n in todo_n:
        start = n_layers - n
        losses, kls = [], []
        with hooks(model, {f"blocks.{j}.ffn.hook_out": zero for j in range(start, n_layers)}):
            for b, tokens in enumerate(batches):
                lo, k = scorer.score(run_from(model, cache, b, start), scorer.reference(cache.final[b]), tokens)
                losses.append(lo.cpu())
                kls.append(k.cpu() if k is not None else lo.cpu() * float("nan"))
                bar.update()
        drops["last_n"][str(n)] = {"loss": torch.cat(losses).tolist(), "kl": torch.cat(kls).tolist()}
        store.write("drops.json", drops)
    bar.close()


# -- one scale -------------------------------------------------------------------------------------
def summarise(records: dict[int, dict], orig: dict, drops: dict, last_n: Sequence[int], rung_names: list[str],
              cfg: LadderConfig, key: dict) -> dict:
    """Per layer and rung: fraction of loss recovered, Δloss and KL with 95% bootstrap intervals over
    eval windows (the same resamples for every quantity, so they are paired), R², FLOPs, parameters."""
    base = torch.tensor(orig["loss"], dtype=torch.float64)
    idx = bootstrap_index(len(base), cfg.bootstrap, cfg.seed)
    base_b = base[idx].mean(1)

    def mean_ci(values: list[float] | None) -> tuple[float | None, list[float] | None]:
        if values is None:
            return None, None
        v = torch.tensor(values, dtype=torch.float64)
        return float(v.mean()), interval(v[idx].mean(1))

    layers = []
    for i in sorted(records):
        rec = records[i]
        zero = torch.tensor(rec["rungs"]["zero"]["loss"], dtype=torch.float64) if "zero" in rec["rungs"] else None
        rows = {}
        for name in rung_names:
            if name not in rec["rungs"]:
                continue
            r = rec["rungs"][name]
            loss = torch.tensor(r["loss"], dtype=torch.float64)
            row = {"loss": float(loss.mean()), "delta_loss": float((loss - base).mean()),
                   "delta_loss_ci": interval(loss[idx].mean(1) - base_b), "r2": r["r2"], "flops": r["flops"],
                   "params": r["params"], "recovered": None, "recovered_ci": None}
            row["kl"], row["kl_ci"] = mean_ci(r["kl"])
            if zero is not None and name != "drop-attn":
                gap = zero.mean() - base.mean()
                row["recovered"] = float((zero.mean() - loss.mean()) / gap) if gap != 0 else float("nan")
                zb = zero[idx].mean(1)
                row["recovered_ci"] = interval((zb - loss[idx].mean(1)) / (zb - base_b))
            rows[name] = row
        layers.append({"layer": i, "rungs": rows, "neurons": rec.get("neurons"), "stream": rec.get("stream")})
    cumulative = []
    for n in last_n:
        if str(n) in drops["last_n"]:
            d = drops["last_n"][str(n)]
            loss = torch.tensor(d["loss"], dtype=torch.float64)
            kl = d["kl"] if all(x == x for x in d["kl"]) else None  # NaN: no head, no KL
            kl_mean, kl_ci = mean_ci(kl)
            cumulative.append({"n": n, "delta_loss": float((loss - base).mean()),
                               "delta_loss_ci": interval(loss[idx].mean(1) - base_b), "kl": kl_mean, "kl_ci": kl_ci})
    return {"key": key, "windows": len(base), "orig_loss": float(base.mean()), "rungs": rung_names,
            "layers": layers, "last_n": cumulative}
