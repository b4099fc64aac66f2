"""Count-model baselines: the held-out loss a trained language model has to beat.

Unigram (add-alpha), and interpolated Kneser-Ney bigram and trigram models (Kneser & Ney 1995;
Chen & Goodman 1999, the interpolated form with one absolute discount per order), counted on the
training split. The smoothing weights (alpha, the discounts) are chosen on the validation split
by grid search; the losses that matter are measured on the test split, over every token of it,
in nats per predicted token, the unit the trainer reports.

    b = ngram_baselines(data)        # cached beside the token arrays
    b.test["trigram"], b.best        # nats per token

A model whose held-out loss is not clearly below `b.best` has learnt less than counting does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ffnlab.errors import FFNLabError
from ffnlab.fingerprint import code_fingerprint
from ffnlab.data.tokens import TokenData
from ffnlab.results import atomic_write_text

ORDERS = ("unigram", "bigram", "trigram")
GRID = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2)) + (0.98,)  # discounts (<= 1 keeps each level normalised)
ALPHAS = (0.001, 0.01, 0.1, 0.5, 1.0)


@dataclass(frozen=True)
class NgramBaselines:
    """Held-out losses (nats per predicted token) of the count models, and how they were fitted."""

    test: dict[str, float]  # order -> loss on the test split
    val: dict[str, float]  # order -> loss on the validation split (where the weights were chosen)
    weights: dict[str, dict[str, float]]  # order -> its smoothing weights
    tokens: dict[str, int]  # split -> number of tokens
    vocab_size: int
    smoothing: str = "unigram add-alpha; bigram and trigram interpolated Kneser-Ney; weights chosen on validation"

    @property
    def best(self) -> float:
        return min(self.test.values())

    @property
    def best_order(self) -> str:
        return min(self.test, key=self.test.get)

    def to_dict(self) -> dict:
        return asdict(self)


def _group(keys: np.ndarray, counts: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sorted n-gram keys (context * width + token): each context's key, total count and
    number of distinct following tokens."""
    ctx = keys // width
    uniq, start, distinct = np.unique(ctx, return_index=True, return_counts=True)
    return uniq, np.add.reduceat(counts, start) if len(counts) else counts, distinct


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[keys == q] for each q (keys sorted), 0 where q is absent."""
    if len(keys) == 0:
        return np.zeros(len(query), dtype=np.float64)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, values[at], 0).astype(np.float64)


class _Level:
    """One interpolated level: counts n(h, c), their sums n(h) and distinct followers N1+(h .)."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, width: int):
        self.keys, self.counts, self.width = keys, counts, width
        self.ctx, self.ctx_total, self.ctx_distinct = _group(keys, counts, width)

    def gather(self, context: np.ndarray, token: np.ndarray) -> tuple[np.ndarray, ...]:
        """(n(h, c), n(h), N1+(h .)) at each position; context < 0 means no context."""
        ok = context >= 0
        key = np.where(ok, context, 0) * self.width + token
        n_hc = np.where(ok, _lookup(self.keys, self.counts, key), 0.0)
        n_h = np.where(ok, _lookup(self.ctx, self.ctx_total, context), 0.0)
        d_h = np.where(ok, _lookup(self.ctx, self.ctx_distinct, context), 0.0)
        return n_hc, n_h, d_h


def _interpolate(lower: np.ndarray, stats: tuple[np.ndarray, ...], discount: float) -> np.ndarray:
    n_hc, n_h, d_h = stats
    seen = n_h > 0
    safe = np.where(seen, n_h, 1.0)
    p = np.maximum(n_hc - discount, 0.0) / safe + discount * d_h / safe * lower
    return np.where(seen, p, lower)


class KneserNey:
    """Interpolated Kneser-Ney up to trigrams, counted on one token stream."""

    def __init__(self, train: np.ndarray, vocab_size: int):
        t = np.asarray(train, dtype=np.int64)
        if len(t) < 3:
            raise FFNLabError(f"the training split has {len(t)} tokens; n-gram baselines need at least 3")
        V = self.V = int(max(vocab_size, int(t.max()) + 1))
        self.unigram_counts = np.bincount(t, minlength=V).astype(np.float64)
        bigram = t[:-1] * V + t[1:]
        k2, c2 = np.unique(bigram, return_counts=True)
        k3, c3 = np.unique(bigram[:-1] * V + t[2:], return_counts=True)
        # continuation counts: distinct left neighbours of each bigram (for the trigram model's middle
        # level) and of each token (lowest level) -- the Kneser-Ney idea
        k2c, n2c = np.unique(k3 % (V * V), return_counts=True)
        self.cont1 = np.bincount(k2 % V, minlength=V).astype(np.float64)
        self.raw2 = _Level(k2, c2.astype(np.float64), V)
        self.cont2 = _Level(k2c, n2c.astype(np.float64), V)
        self.raw3 = _Level(k3, c3.astype(np.float64), V)

    def _lowest(self, token: np.ndarray, discount: float) -> np.ndarray:
        n = self.cont1.sum()
        types = float((self.cont1 > 0).sum())
        return (np.maximum(self.cont1[token] - discount, 0.0) + discount * types / self.V) / n

    def stats(self, stream: np.ndarray) -> dict[str, object]:
        """Counts at every predicted position of `stream` (positions 1..end); discount-free, so the
        grid search over discounts reuses them."""
        s = np.asarray(stream, dtype=np.int64)
        token, prev = s[1:], s[:-1]
        prev2 = np.concatenate([[-1], s[:-2]])
        ctx3 = np.where(prev2 >= 0, prev2 * self.V + prev, -1)
        return {"token": token, "raw2": self.raw2.gather(prev, token), "cont2": self.cont2.gather(prev, token),
                "raw3": self.raw3.gather(ctx3, token)}

    def prob(self, st: dict, order: str, d: dict[str, float]) -> np.ndarray:
        """The probability of each position's token in `st` under `order` with weights `d`."""
        token = st["token"]
        if order == "unigram":
            p = (self.unigram_counts[token] + d["alpha"]) / (self.unigram_counts.sum() + d["alpha"] * self.V)
        else:
            p1 = self._lowest(token, d["d1"])
            if order == "bigram":
                p = _interpolate(p1, st["raw2"], d["d2"])
            else:
                p = _interpolate(_interpolate(p1, st["cont2"], d["d2"]), st["raw3"], d["d3"])
        return p

    def loss(self, st: dict, order: str, d: dict[str, float]) -> float:
        """Mean negative log-likelihood (nats per predicted token) of the positions in `st`."""
        return float(-np.log(np.maximum(self.prob(st, order, d), 1e-300)).mean())


def _tune(km: KneserNey, st: dict, order: str) -> dict[str, float]:
    """Coordinate search over the grid for the weights of `order` (on validation statistics)."""
    if order == "unigram":
        return {"alpha": min(ALPHAS, key=lambda a: km.loss(st, order, {"alpha": a}))}
    names = ["d1", "d2"] + (["d3"] if order == "trigram" else [])
    best = {n: 0.75 for n in names}
    for _ in range(3):
        before = dict(best)
        for n in names:
            best[n] = min(GRID, key=lambda v: km.loss(st, order, {**best, n: float(v)}))
            best[n] = float(best[n])
        if best == before:
            break
    return best


def fit_baselines(train: np.ndarray, val: np.ndarray, test: np.ndarray, vocab_size: int) -> NgramBaselines:
    km = KneserNey(train, vocab_size)
    val_st, test_st = km.stats(val), km.stats(test)
    weights = {order: _tune(km, val_st, order) for order in ORDERS}
    return NgramBaselines(
        test={o: km.loss(test_st, o, weights[o]) for o in ORDERS},
        val={o: km.loss(val_st, o, weights[o]) for o in ORDERS},
        weights=weights, tokens={"train": len(train), "val": len(val), "test": len(test)}, vocab_size=km.V)


def _cache_file(data, test_tokens: int | None) -> Path | None:
    cache = getattr(data, "cache", None)
    if cache is None:
        return None
    part = "" if test_tokens is None else f"-first{test_tokens}"
    return Path(cache) / f"{data.fingerprint}-ngram{part}-{code_fingerprint(__name__)}.json"


def ngram_baselines(data, test_tokens: int | None = None) -> NgramBaselines:
    """The baselines of `data` (a `TokenData`), computed once and cached beside its token arrays
    (keyed by the data fingerprint and by this module's code). `test_tokens`: score only the
    first that many predicted test tokens (the ones a model was scored on), else all."""
    file = _cache_file(data, test_tokens)
    if file is not None and file.is_file():
        try:
            return NgramBaselines(**json.loads(file.read_text()))
        except (ValueError, TypeError):
            pass  # a damaged cache file is recomputed
    test = data.test if test_tokens is None else data.test[:test_tokens + 1]
    b = fit_baselines(data.train, data.val, test, data.vocab_size)
    if file is not None:
        atomic_write_text(file, json.dumps(b.to_dict(), indent=1))
    return b


def beside(data, val_loss: float) -> dict[str, object]:
    """A model's validation loss beside the count models' (for run summaries): empty for data that
    is not a tokenized corpus (a synthetic task has no n-gram baseline)."""
    if not isinstance(data, TokenData):
        return {}
    b = ngram_baselines(data)
    best = min(b.val.values())
    return {"ngram_val": b.val, "best_ngram_val": best, "ngram_gap": best - val_loss}
