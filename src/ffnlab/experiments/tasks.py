"""Synthetic tasks that separate memorised facts from in-context computation (claim C8).

    FactTask    "entity IS attribute ;" statements; each fact has an exposure weight, so some
                facts are seen few and others many times during training. Answering needs
                the fact stored in the weights.
    RecallTask  "k1 v1 k2 v2 ... QUERY k v": fresh random key->value pairs in every sequence,
                then queries drawn with replacement; answering needs the pair found in the
                context (associative recall).
    Mixture     rows of several tasks in one batch (one shared vocabulary).

All follow the trainer's data protocol: `.vocab_size`, `.fingerprint` and
`batch(split, index, batch_size, seq_len, seed) -> (inputs, targets)`, targets -100
where there is no loss; a batch is a pure function of its arguments.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ffnlab.device import module_device
from ffnlab.errors import FFNLabError

IGNORE = -100
SEP, IS, QUERY = 0, 1, 2  # shared special tokens
N_SPECIAL = 3


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class Fact:
    entity: int  # token id
    attribute: int  # token id
    weight: int  # relative exposure: a fact of weight 8 is seen 8 times as often as one of weight 1

    @property
    def prompt(self) -> list[int]:
        """Token ids that ask for the attribute: [entity, IS]."""
        return [self.entity, IS]

    @property
    def answer(self) -> int:
        return self.attribute


class FactTask:
    """`n_entities` facts entity -> attribute; entity i has exposure weight `weights[i % len(weights)]`.

    Both splits draw statements of the same facts (memorisation is measured on what was
    trained); the training split draws them in proportion to their weight, "val" uniformly.
    """

    def __init__(self, n_entities: int = 120, n_attributes: int = 16, weights: tuple[int, ...] = (1, 8, 64),
                 seed: int = 0):
        if n_entities < 1 or n_attributes < 2 or not weights or min(weights) < 1:
            raise FFNLabError("FactTask needs n_entities >= 1, n_attributes >= 2 and positive weights")
        self.n_entities, self.n_attributes, self.weights, self.seed = n_entities, n_attributes, tuple(weights), seed
        rng = _rng("facts", n_entities, n_attributes, seed)
        attrs = rng.integers(0, n_attributes, n_entities)
        first_attr = N_SPECIAL + n_entities
        self.facts = tuple(Fact(N_SPECIAL + i, first_attr + int(attrs[i]), self.weights[i % len(self.weights)])
                           for i in range(n_entities))
        self.vocab_size = first_attr + n_attributes
        self.fingerprint = f"facts-{n_entities}-{n_attributes}-{'.'.join(map(str, weights))}-{seed}"
        w = np.array([f.weight for f in self.facts], dtype=np.float64)
        self._p = {"train": w / w.sum(), "val": np.full(len(w), 1.0 / len(w))}

    def exposures(self, statements: int) -> dict[int, float]:
        """Expected times one fact of each weight is seen in `statements` training statements."""
        p = self._p["train"]
        return {w: statements * float(p[[f.weight == w for f in self.facts]][0]) for w in sorted(set(self.weights))}

    def prompts(self) -> tuple[Tensor, Tensor, Tensor]:
        """(prompts (N, 2), answers (N,), weights (N,)) for every fact."""
        return (torch.tensor([f.prompt for f in self.facts]), torch.tensor([f.answer for f in self.facts]),
                torch.tensor([f.weight for f in self.facts]))

    def batch(self, split: str, index: int, batch_size: int, seq_len: int, seed: int) -> tuple[Tensor, Tensor]:
        if split not in self._p:
            raise FFNLabError(f"unknown split {split!r}; known: train, val")
        per_row = (seq_len + 1) // 4
        if per_row < 1:
            raise FFNLabError(f"seq_len={seq_len} is too short for a fact statement (4 tokens)")
        rng = _rng("fact-batch", self.fingerprint, split, index, seed)
        pick = rng.choice(len(self.facts), size=(batch_size, per_row), p=self._p[split])
        seq = np.full((batch_size, seq_len + 1), SEP, dtype=np.int64)
        tgt = np.full((batch_size, seq_len + 1), IGNORE, dtype=np.int64)
        for j in range(per_row):
            ent = np.array([self.facts[i].entity for i in pick[:, j]])
            att = np.array([self.facts[i].attribute for i in pick[:, j]])
            seq[:, 4 * j], seq[:, 4 * j + 1], seq[:, 4 * j + 2] = ent, IS, att
            tgt[:, 4 * j + 2] = att  # loss only where the answer is predicted
        return torch.from_numpy(seq[:, :-1]), torch.from_numpy(tgt[:, 1:])


class RecallTask:
    """In-context associative recall: `n_pairs` fresh key -> value pairs, then `n_queries` queries.

    Queries are drawn with replacement from the pairs, so no answer follows by elimination from
    the ones asked before (drawn without, the last of as many queries as pairs is the one value
    not yet asked), and there may be more queries than pairs: each is a supervised answer."""

    def __init__(self, n_keys: int = 32, n_values: int = 32, n_pairs: int = 8, n_queries: int = 4, offset: int = 0,
                 seed: int = 0):
        if not 1 <= n_pairs <= n_keys or n_queries < 1:
            raise FFNLabError(f"RecallTask needs 1 <= n_pairs <= n_keys and n_queries >= 1 (got n_pairs={n_pairs}, "
                              f"n_keys={n_keys}, n_queries={n_queries})")
        self.n_keys, self.n_values, self.n_pairs, self.n_queries = n_keys, n_values, n_pairs, n_queries
        self.first_key = N_SPECIAL + offset
        self.first_value = self.first_key + n_keys
        self.vocab_size = self.first_value + n_values
        self.seed = seed
        self.fingerprint = f"recall-{n_keys}-{n_values}-{n_pairs}-{n_queries}-{offset}-{seed}-replace"

    def batch(self, split: str, index: int, batch_size: int, seq_len: int, seed: int) -> tuple[Tensor, Tensor]:
        need = 2 * self.n_pairs + 3 * self.n_queries
        if seq_len < need:
            raise FFNLabError(f"seq_len={seq_len} is too short for {self.n_pairs} pairs and {self.n_queries} "
                              f"queries ({need} tokens)")
        rng = _rng("recall-batch", self.fingerprint, split, index, seed)
        seq = np.full((batch_size, seq_len + 1), SEP, dtype=np.int64)
        tgt = np.full((batch_size, seq_len + 1), IGNORE, dtype=np.int64)
        for b in range(batch_size):
            keys = rng.choice(self.n_keys, self.n_pairs, replace=False) + self.first_key
            values = rng.integers(0, self.n_values, self.n_pairs) + self.first_value
            seq[b, 0:2 * self.n_pairs:2], seq[b, 1:2 * self.n_pairs:2] = keys, values
            for q, i in enumerate(rng.integers(0, self.n_pairs, self.n_queries)):
                at = 2 * self.n_pairs + 3 * q
                seq[b, at:at + 3] = QUERY, keys[i], values[i]
                tgt[b, at + 2] = values[i]
        return torch.from_numpy(seq[:, :-1]), torch.from_numpy(tgt[:, 1:])


class Mixture:
    """Rows of each task in turn (row r comes from task r mod n), in one vocabulary."""

    def __init__(self, *tasks):
        if not tasks:
            raise FFNLabError("a Mixture needs at least one task")
        self.tasks = tasks
        self.vocab_size = max(t.vocab_size for t in tasks)
        self.fingerprint = "mix(" + ",".join(t.fingerprint for t in tasks) + ")"

    def batch(self, split: str, index: int, batch_size: int, seq_len: int, seed: int) -> tuple[Tensor, Tensor]:
        n = len(self.tasks)
        parts = [t.batch(split, index, len(range(i, batch_size, n)), seq_len, seed)
                 for i, t in enumerate(self.tasks) if len(range(i, batch_size, n))]
        inputs = torch.empty(batch_size, seq_len, dtype=torch.long)
        targets = torch.empty(batch_size, seq_len, dtype=torch.long)
        for i, (x, y) in enumerate(parts):
            inputs[i::n], targets[i::n] = x, y
        return inputs, targets


@torch.no_grad()
def answer_accuracy(model, inputs: Tensor, targets: Tensor) -> float:
    """Share of answer positions (targets != -100) where the argmax is the answer."""
    predicted = model(inputs.to(module_device(model))).argmax(-1).cpu()
    mask = targets != IGNORE
    return float((predicted[mask] == targets[mask]).float().mean())


@torch.no_grad()
def fact_accuracy(model, task: FactTask) -> dict[int, float]:
    """Accuracy on every fact, asked at the start of a sequence, by exposure weight."""
    prompts, answers, weights = task.prompts()
    correct = model(prompts.to(module_device(model)))[:, -1].argmax(-1).cpu() == answers
    return {int(w): float(correct[weights == w].float().mean()) for w in weights.unique()}
