"""Knowledge capacity (claim C8): how many bits of random facts a model stores per parameter.

    CapacityFacts   N facts "e_1 .. e_k IS a": an entity spelled by k tokens of a small alphabet,
                    its attribute one of A tokens drawn uniformly at random. Every entity token is
                    shared by many entities, so neither the embedding nor the unembedding of one
                    token can hold a fact: the attribute is a function of the k tokens together,
                    which only the layers can compute (the reason for multi-token entities
                    rather than frozen embeddings: ffnlab's models train every embedding, and a
                    task that needs the layers keeps the model code untouched).
                    Training sees the facts in epochs (each epoch a fresh permutation), so every
                    fact is seen exactly `exposures` times (Allen-Zhu & Li 2024 use 100 and 1000).
    fact_bits       the information the model's answers hold about the N attributes, from the
                    accuracy: N * (log2 A - h(acc) - (1 - acc) log2(A - 1)), h the binary entropy
                    (Fano's bound: the mutual information between the true attribute and the answer
                    when the errors spread over the other A - 1 values; 0 at chance, N log2 A at 1).
    capacity        the most bits a model stores over a sweep of N (Allen-Zhu & Li's capacity:
                    bits stop growing with N once the model is full).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F_
from torch import Tensor

from ffnlab.device import module_device
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


@torch.no_grad()
def answers(model, task: CapacityFacts, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """(correct (N,) bool, loss (N,) nats) of the model's answer to every fact, asked at sequence start;
    the prediction is restricted to the attribute tokens (the answer's format is not the question)."""
    prompts, target = task.prompts()
    device = module_device(model)
    lo, hi = task.first_attribute, task.first_attribute + task.n_attributes
    correct, loss = [], []
    for i in range(0, task.n_facts, batch_size):
        logits = model(prompts[i:i + batch_size].to(device))[:, -1, lo:hi].float().cpu()
        y = target[i:i + batch_size] - lo
        correct.append(logits.argmax(-1) == y)
        loss.append(F_.cross_entropy(logits, y, reduction="none"))
    return torch.cat(correct), torch.cat(loss)


def binary_entropy(p: float) -> float:
    return 0.0 if p <= 0.0 or p >= 1.0 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def fact_bits(n_facts: int, accuracy: float, n_attributes: int) -> float:
    """Bits the answers hold about `n_facts` uniform random attributes of `n_attributes` values, from the
    accuracy (Fano): N * (log2 A - h(acc) - (1 - acc) log2(A - 1)), clipped at 0 below chance."""
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    if accuracy <= 1.0 / n_attributes:
        return 0.0
    a = n_attributes
    return n_facts * (math.log2(a) - binary_entropy(accuracy) - (1 - accuracy) * math.log2(a - 1))


def loss_bits(n_facts: int, mean_loss: float, n_attributes: int) -> float:
    """Allen-Zhu & Li's loss form: N * (log2 A - cross-entropy in bits), clipped at 0."""
    return max(0.0, n_facts * (math.log2(n_attributes) - mean_loss / math.log(2)))


def capacity(points: Sequence[tuple[int, float]], n_attributes: int) -> tuple[float, int]:
    """(most bits stored, at which N) over a sweep of (N, accuracy) points."""
    if not points:
        raise ValueError("capacity needs at least one (N, accuracy) point")
    return max((fact_bits(n, acc, n_attributes), n) for n, acc in points)


def in_band(points: Sequence[tuple[int, float]], low: float = 0.2, high: float = 0.8) -> bool:
    """Whether the sweep reached a point between `low` and `high` accuracy (the model is full there)."""
    return any(low <= acc <= high for _, acc in points)


# -- models of matched size ----------------------------------------------------------------------
EMBEDDING = ("tok.", "pos.", "types.", "head.")  # token, position, type embeddings and the unembedding


@functools.lru_cache(maxsize=256)
def embedding_params(cfg) -> int:
    """Parameters of the embeddings and the unembedding (a tied head counted once, with the embedding)."""
    from ffnlab.model import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith(EMBEDDING))


def non_embedding_params(cfg) -> int:
    from ffnlab.model import count_params

    return count_params(cfg) - embedding_params(cfg)


def match_width_by(cfg, target: int, count):
    """`cfg` with d_model (a multiple of n_heads, even per head) whose `count(cfg)` (increasing in the
    width) is closest to `target`."""
    step = cfg.n_heads * 2
    size = lambda u: count(cfg.replace(d_model=u * step))  # noqa: E731
    lo, hi = 1, 4 * cfg.d_model // step + 1  # a model without FFN needs about sqrt(3) times the width
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) < target else (lo, mid)
    return cfg.replace(d_model=min((lo, hi), key=lambda u: abs(size(u) - target)) * step)


def flattened(points: Sequence[tuple[int, float]], n_attributes: int, growth: float = 0.1) -> bool:
    """Whether the bits stored stopped growing: the largest N stores at most `growth` more bits than the
    next smaller one (a model that is not full yet keeps storing more with more facts)."""
    if len(points) < 2:
        return False
    (n0, a0), (n1, a1) = sorted(points)[-2:]
    return fact_bits(n1, a1, n_attributes) <= (1 + growth) * fact_bits(n0, a0, n_attributes)
