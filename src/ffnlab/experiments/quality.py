"""Models worth measuring: a learning rate chosen per FFN family, and the bar every trained
language model must clear before an experiment's verdict may rest on it.

The bar (per size, see `common.SIZES`): test loss at least `bar` nats below the best n-gram
count model of the same tokenization (`ffnlab.data.ngram`), and, where the size asks for it,
a plateau -- validation loss improved by less than `PLATEAU` (relative) over the last 20% of
the steps. A *comparison* model -- a variant an experiment compares with its reference model,
often one built weaker on purpose (no FFN, a linear or low-rank FFN) -- must beat the best
n-gram at all (gap > 0) and plateau where the size asks: being weaker is its finding, not a
sign of under-training, while its plateau, its tuned learning rate and the reference's full
bar are what separate the two (`COMPARISON_RULE`). A model that misses its bar makes its
experiment's verdict "inconclusive (under-trained)" (`registry.run_experiment`). Learning rates
are chosen on the validation split from a short sweep per FFN family, cached in
`<results>/lr-sweeps/`; numbers behind verdicts are on test.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F_

from ffnlab.data.ngram import ngram_baselines
from ffnlab.data.tokens import TokenData
from ffnlab.errors import FFNLabError
from ffnlab.fingerprint import code_fingerprint
from ffnlab.model import ModelConfig
from ffnlab.results import Deviation, atomic_write_text
from ffnlab.store import config_hash

PLATEAU = 0.01  # relative improvement of validation loss over the last 20% of steps
RETRY_RULE = ("a comparison model the criterion uses that misses the plateau is trained once more, {retry:g}x as many "
              "steps on the same seed (the same batches, continued), and the longer run replaces it (its steps are in "
              "the trained-models table); the longer run can only narrow the reference model's lead over that variant")
COMPARISON_RULE = ("a comparison model (a variant compared with the experiment's reference model) must beat the best "
                   "n-gram (gap > 0) and plateau where the size asks; the size's bar applies to the reference model")
GATED = ("glu", "bilinear", "reglu", "geglu", "swiglu")


def comparison_deviation(version: int, seen: str) -> Deviation:
    """The log entry of an experiment whose comparison models moved to `COMPARISON_RULE` at `version`."""
    return Deviation(version, "the bar of comparison models (variants compared with the reference model) changed "
                              "from the size's bar to: beat the best n-gram and plateau where the size asks; the "
                              "reference model keeps the size's bar", seen,
                     "a model built weaker on purpose (no FFN, a linear or low-rank FFN) cannot be asked to reach "
                     "the full model's margin over the n-grams: its distance from it is what the experiment "
                     "measures; its plateau and tuned learning rate still separate 'weaker' from 'under-trained'")


def family(cfg: ModelConfig) -> str:
    """The FFN family whose learning rate a model uses: gated kinds share one (they start slowly at
    the usual initialisation, Shazeer 2020), every other kind is its own family."""
    return "gated" if cfg.ffn.kind in GATED else cfg.ffn.kind


@dataclass(frozen=True)
class Quality:
    """How good one trained language model is, against the bar of its size."""

    name: str
    run_id: int | None
    family: str
    lr: float
    steps: int
    test_loss: float | None  # nats per predicted token, over the test tokens below
    test_tokens: int
    best_ngram: float | None  # the best count model's loss on the same test tokens
    ngram_order: str
    bar: float | None  # required gap (nats); None: no n-gram bar applies
    improvement: float | None  # relative validation-loss improvement over the last 20% of steps
    plateau_required: bool
    exempt: str = ""  # why the bar does not apply (a control built to be crippled, a synthetic task)
    in_verdict: bool = True  # False: shown for reference only; missing the bar is flagged, not fatal
    comparison: bool = False  # a variant compared with the reference model: its bar is 0 (COMPARISON_RULE)
    first_steps: int | None = None  # a longer run's first length, where that run missed the plateau (RETRY_RULE)

    @property
    def gap(self) -> float | None:
        return None if self.test_loss is None or self.best_ngram is None else self.best_ngram - self.test_loss

    @property
    def plateaued(self) -> bool | None:
        return None if self.improvement is None else self.improvement < PLATEAU

    @property
    def meets(self) -> bool:
        if self.exempt or self.bar is None:
            return True
        if self.gap is None or self.gap < self.bar or (self.comparison and self.gap <= 0):
            return False
        return bool(self.plateaued) or not self.plateau_required

    def shortfall(self) -> str:
        """Why the model misses its bar, in words (empty if it does not)."""
        if self.meets:
            return ""
        why = []
        if self.gap is None or self.gap < self.bar or (self.comparison and self.gap <= 0):
            needs = "to beat it (a comparison model)" if self.comparison else f">= {self.bar:g} below"
            why.append(f"test loss {self.test_loss:.3f} is {self.gap:+.3f} nats from the best n-gram "
                       f"({self.ngram_order}, {self.best_ngram:.3f}); needs {needs}")
        if self.plateau_required and self.improvement is None:
            why.append(f"no plateau measurable (fewer than two evaluations in the last 20% of {self.steps} steps)")
        elif self.plateau_required and not self.plateaued:
            again = f", as at {self.first_steps} steps before" if self.first_steps else ""
            why.append(f"not at a plateau (validation loss still fell {100 * self.improvement:.1f}% over the "
                       f"last 20% of {self.steps} steps{again}; plateau: < {100 * PLATEAU:g}%)")
        return f"{self.name}: " + " and ".join(why)

    def to_dict(self) -> dict:
        return {**asdict(self), "gap": self.gap, "plateaued": self.plateaued, "meets": self.meets}


def misses_plateau(run, steps: int) -> bool:
    """Whether a finished run (a `TrainResult` of `steps` steps) is still falling by the plateau rule."""
    imp = improvement(run.history, steps)
    return imp is not None and imp >= PLATEAU


def improvement(history: list[dict[str, float]], steps: int) -> float | None:
    """Relative fall of validation loss from the first evaluation at >= 80% of `steps` to the last."""
    evals = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    late = [v for s, v in evals if s >= 0.8 * steps]
    if len(late) < 2:
        return None
    return (late[0] - late[-1]) / late[0]


@torch.no_grad()
def test_loss(model: torch.nn.Module, data: TokenData, seq_len: int, max_tokens: int | None,
              batch_size: int = 32) -> tuple[float, int]:
    """(mean next-token loss in nats, tokens scored) over consecutive windows of the test split."""
    x, y = data.windows("test", seq_len, max_tokens)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    try:
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size].to(device)).float()
            total += F_.cross_entropy(logits.flatten(0, 1), y[i:i + batch_size].to(device).flatten(), reduction="sum")
    finally:
        model.train(was_training)
    return float(total) / y.numel(), y.numel()


def assess(name: str, run, data, steps: int, lr: float, bar: float | None, plateau: bool, seq_len: int,
           max_tokens: int | None, exempt: str = "", in_verdict: bool = True, comparison: bool = False,
           first_steps: int | None = None) -> Quality:
    """Score a trained run (a `TrainResult`) against the n-gram baselines of its own tokenization
    (`comparison`: the bar is 0 instead of `bar`, see `COMPARISON_RULE`; `first_steps`: the run is
    the longer retry of one that missed the plateau at that length)."""
    fam = family(run.model.config)
    imp = improvement(run.history, steps)
    if not isinstance(data, TokenData):
        return Quality(name, run.run_id, fam, lr, steps, None, 0, None, "", None, imp, plateau,
                       exempt or "synthetic task: no n-gram baseline applies", in_verdict, comparison, first_steps)
    loss, n = _cached_test_loss(run, data, seq_len, max_tokens)
    base = ngram_baselines(data, n)
    bar = 0.0 if comparison and bar is not None else bar
    return Quality(name, run.run_id, fam, lr, steps, loss, n, base.best, base.best_order, bar, imp, plateau, exempt,
                   in_verdict, comparison, first_steps)


def _cached_test_loss(run, data: TokenData, seq_len: int, max_tokens: int | None) -> tuple[float, int]:
    """The test loss, stored beside the checkpoint (keyed by the evaluation and the code)."""
    key = config_hash({"data": data.fingerprint, "seq_len": seq_len, "max_tokens": max_tokens,
                       "code": code_fingerprint(__name__)})
    file = Path(run.out_dir) / f"test-loss-{key}.json"
    if file.is_file():
        saved = json.loads(file.read_text())
        return float(saved["loss"]), int(saved["tokens"])
    loss, n = test_loss(run.model, data, seq_len, max_tokens)
    atomic_write_text(file, json.dumps({"loss": loss, "tokens": n}))
    return loss, n


def choose_lr(path: Path, lrs: tuple[float, ...], train_at, about: dict | None = None, extend: int = 2) -> dict:
    """The learning rate with the lowest validation loss among `lrs`; `train_at(lr)` trains the
    family's sweep model briefly and returns its `TrainResult`. A winner at the edge of the grid is
    not trusted: the grid grows past that edge by its own step (the ratio of its last two rates),
    up to `extend` rates, until a rate inside the grid wins. Cached at `path` (JSON), with `about`
    (what was swept) recorded beside the numbers."""
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            if saved.get("grid") == list(lrs) and saved.get("extend") == extend:
                return saved
        except ValueError:
            pass  # a damaged record is recomputed
    val, failed = {}, {}

    def sweep(lr: float) -> None:
        try:
            loss = train_at(lr).val_loss
        except FFNLabError as err:  # diverged: this learning rate is out
            loss, failed[repr(lr)] = float("inf"), str(err)
        val[repr(lr)] = loss if math.isfinite(loss) else float("inf")

    tried = sorted(lrs)
    for lr in tried:
        sweep(lr)
    for _ in range(extend if len(tried) > 1 else 0):
        best = min(tried, key=lambda lr: val[repr(lr)])
        if not math.isfinite(val[repr(best)]):
            break  # every rate diverged: a wider grid is not what is missing
        if best == tried[-1]:
            tried.append(_rate(tried[-1] * tried[-1] / tried[-2]))
            sweep(tried[-1])
        elif best == tried[0]:
            tried.insert(0, _rate(tried[0] * tried[0] / tried[1]))
            sweep(tried[0])
        else:
            break
    best = min(tried, key=lambda lr: val[repr(lr)])
    if not math.isfinite(val[repr(best)]):
        raise FFNLabError(f"every learning rate of the sweep {tried} failed: {failed}")
    edge = best in (tried[0], tried[-1]) and len(tried) > 1
    record = {**(about or {}), "grid": list(lrs), "extend": extend, "lrs": tried, "val_loss": val, "chosen": best,
              "at_edge": edge, "failed": failed}
    atomic_write_text(path, json.dumps(record, indent=1))
    return record


def _rate(lr: float) -> float:
    """A learning rate rounded to 3 significant digits (so that grown grids name the same runs)."""
    return float(f"{lr:.3g}")
