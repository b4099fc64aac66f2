"""Knowledge capacity (claim C8): how many bits of random facts a model stores per parameter.

    fact_bits       the information the model's answers hold about N uniform random attributes, from
                    the accuracy: N * (log2 A - h(acc) - (1 - acc) log2(A - 1)), h the binary entropy
                    (Fano's bound: the mutual information between the true attribute and the answer
                    when the errors spread over the other A - 1 values; 0 at chance, N log2 A at 1).
    loss_bits       Allen-Zhu & Li 2024's form from the loss: N * (log2 A - cross-entropy in bits).
    capacity        the most bits a model stores over a sweep of N (Allen-Zhu & Li's capacity:
                    bits stop growing with N once the model is full, `flattened`).
The facts themselves are `capacity_task.CapacityFacts`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F_
from torch import Tensor

from ffnlab.device import module_device
from ffnlab.experiments.capacity_task import CapacityFacts


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


def known_facts(n_facts: int, accuracy: float, n_attributes: int) -> float:
    """Facts known beyond chance, N (acc - 1/A) / (1 - 1/A): exact for a model that knows some facts and
    guesses the others uniformly (where `fact_bits`, a lower bound, undercounts)."""
    return n_facts * (accuracy - 1 / n_attributes) / (1 - 1 / n_attributes)


KEEP = 0.75  # a model is full at N when it still knows >= 75% as many facts (beyond chance) at 2N


def keeps(bigger: tuple[int, float], smaller: tuple[int, float], n_attributes: int, keep: float = KEEP) -> bool:
    """Whether the (N, accuracy) point `bigger` knows at least `keep` as many facts as `smaller` (`known_facts`)."""
    return known_facts(*bigger, n_attributes) >= keep * known_facts(*smaller, n_attributes)


def peak_and_double(points: Sequence[tuple[int, float]],
                    n_attributes: int) -> tuple[tuple[int, float], tuple[int, float] | None]:
    """The (N, accuracy) point storing the most bits, and the point right after it if that is at twice its N
    (else None: the peak is at the largest N, or the sweep skipped 2N)."""
    pts = sorted(points)
    best = max(range(len(pts)), key=lambda i: fact_bits(*pts[i], n_attributes))
    after = pts[best + 1] if best + 1 < len(pts) and pts[best + 1][0] == 2 * pts[best][0] else None
    return pts[best], after


def plateaued(points: Sequence[tuple[int, float]], n_attributes: int, keep: float = KEEP) -> bool:
    """Whether the sweep shows the model full: the N that stores the most bits is not the largest, and at
    twice that N the model still knows at least `keep` as many facts (`known_facts`). Bits still growing at
    the largest N: not full yet; known facts collapsing after the peak: the larger sets were not learned
    in the budget, so the peak measures training, not capacity."""
    peak, after = peak_and_double(points, n_attributes)
    return after is not None and keeps(after, peak, n_attributes, keep)
