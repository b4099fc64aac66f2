"""Facts to memorise for the knowledge-capacity measurement (claim C8; the measurement is in `capacity`).

N facts "e_1 .. e_k IS a": an entity spelled by k tokens of a small alphabet, its attribute one of
A tokens drawn uniformly at random. Every entity token is shared by many entities, so neither the
embedding nor the unembedding of one token can hold a fact: the attribute is a function of the k
tokens together, which only the layers can compute. (Multi-token entities rather than frozen
embeddings: ffnlab's trainer trains every embedding, and a task that needs the layers leaves the
model and trainer untouched.) Training sees the facts in epochs, each a fresh permutation, so every
fact is seen exactly `exposures` times (Allen-Zhu & Li 2024 use 100 and 1000).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import Tensor

from ffnlab.errors import FFNLabError

IGNORE = -100
SEP, IS = 0, 1
N_SPECIAL = 2


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class CapacityFacts:
    """`n_facts` random facts: entity (k tokens of `alphabet`) -> attribute (one of `n_attributes`).

    Trainer data protocol: `.vocab_size`, `.fingerprint`, `batch(split, index, batch_size, seq_len,
    seed)`, loss only at the attribute. Both splits draw the same facts (memorisation is measured on
    what was trained); "train" runs through epochs of fresh permutations, "val" through one fixed one.
    """

    def __init__(self, n_facts: int, n_attributes: int = 16, entity_tokens: int = 2, alphabet: int = 64,
                 seed: int = 0):
        if n_facts < 1 or n_attributes < 2 or entity_tokens < 2 or alphabet < 2:
            raise FFNLabError("CapacityFacts needs n_facts >= 1, n_attributes >= 2, entity_tokens >= 2, alphabet >= 2")
        if n_facts > alphabet ** entity_tokens:
            raise FFNLabError(f"{n_facts} facts need more entities than {alphabet}^{entity_tokens}")
        self.n_facts, self.n_attributes, self.k, self.alphabet, self.seed = (n_facts, n_attributes, entity_tokens,
                                                                              alphabet, seed)
        rng = _rng("capacity", n_facts, n_attributes, entity_tokens, alphabet, seed)
        codes = rng.choice(alphabet ** entity_tokens, n_facts, replace=False)
        digits = (codes[:, None] // alphabet ** np.arange(entity_tokens - 1, -1, -1)) % alphabet
        self.entities = N_SPECIAL + digits  # (N, k) token ids
        self.first_attribute = N_SPECIAL + alphabet
        self.attributes = self.first_attribute + rng.integers(0, n_attributes, n_facts)  # (N,)
        self.vocab_size = self.first_attribute + n_attributes
        self.statement = entity_tokens + 2  # e_1 .. e_k IS a
        self.fingerprint = f"capacity-{n_facts}-{n_attributes}-{entity_tokens}-{alphabet}-{seed}"

    def steps_for(self, exposures: int, batch_size: int, seq_len: int) -> int:
        """Training steps in which every fact is seen `exposures` times."""
        per_step = batch_size * self.per_row(seq_len)
        return max(1, math.ceil(exposures * self.n_facts / per_step))

    def per_row(self, seq_len: int) -> int:
        n = (seq_len + 1) // self.statement
        if n < 1:
            raise FFNLabError(f"seq_len={seq_len} is too short for a fact statement ({self.statement} tokens)")
        return n

    def _order(self, split: str, epoch: int, seed: int) -> np.ndarray:
        return _rng("capacity-order", self.fingerprint, split, epoch if split == "train" else 0,
                    seed).permutation(self.n_facts)

    def batch(self, split: str, index: int, batch_size: int, seq_len: int, seed: int) -> tuple[Tensor, Tensor]:
        if split not in ("train", "val"):
            raise FFNLabError(f"unknown split {split!r}; known: train, val")
        per_row = self.per_row(seq_len)
        first = index * batch_size * per_row  # the batch's first statement in the stream of epochs
        idx = np.empty(batch_size * per_row, dtype=np.int64)
        for j, s in enumerate(range(first, first + len(idx))):
            epoch, at = divmod(s, self.n_facts)
            if j == 0 or at == 0:
                order = self._order(split, epoch, seed)
            idx[j] = order[at]
        idx = idx.reshape(batch_size, per_row)
        seq = np.full((batch_size, seq_len + 1), SEP, dtype=np.int64)
        tgt = np.full((batch_size, seq_len + 1), IGNORE, dtype=np.int64)
        w = self.statement
        for j in range(per_row):
            seq[:, w * j:w * j + self.k] = self.entities[idx[:, j]]
            seq[:, w * j + self.k] = IS
            seq[:, w * j + self.k + 1] = self.attributes[idx[:, j]]
            tgt[:, w * j + self.k + 1] = self.attributes[idx[:, j]]
        return torch.from_numpy(seq[:, :-1]), torch.from_numpy(tgt[:, 1:])

    def prompts(self) -> tuple[Tensor, Tensor]:
        """(prompts (N, k + 1): [e_1 .. e_k IS], answers (N,)) for every fact."""
        ask = np.concatenate([self.entities, np.full((self.n_facts, 1), IS)], axis=1)
        return torch.from_numpy(ask), torch.from_numpy(self.attributes.copy())
