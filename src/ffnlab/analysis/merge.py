"""Exact merges of streamed statistics: what lets N processes (or N passes) add up to one.

    merge_moments    count, mean and M2 of two parts -> of their union (Chan, Golub & LeVeque 1979,
                     "parallel" update); element-wise, any shape
    merge_comoments  the same for cross second moments C = sum (x - mean_x)(y - mean_y)^T, the
                     sufficient statistic of a streamed least-squares fit: (Dx,), (Dy,), (Dx, Dy)
    top_k_sorted     a block's top-k per column by |value|, ties to the earlier index
    merge_top_k      two top-k lists -> the top-k of their union, by the same order

One order decides every top-k here: |value| descending, then global index ascending. It is a
total order on (value, index) pairs, so the top-k of a union does not depend on how the tokens
were split or in which order the parts are merged: a sharded pass keeps the same indices,
bit for bit, as one process. Counts and histograms merge by addition.
"""

from __future__ import annotations

import torch
from torch import Tensor

EMPTY = -1  # index of an unused top-k slot (fewer than k tokens seen)


def merge_moments(count_a: int, mean_a: Tensor, m2_a: Tensor, count_b: int, mean_b: Tensor,
                  m2_b: Tensor) -> tuple[int, Tensor, Tensor]:
    """(count, mean, M2) of the union of two parts, M2 = sum of squared deviations from the mean.

    Chan et al.'s update: mean = mean_a + delta * n_b / n, M2 = M2_a + M2_b + delta^2 n_a n_b / n.
    Exact in exact arithmetic; in floating point as accurate as a two-pass computation.
    """
    total = count_a + count_b
    if count_b == 0:
        return count_a, mean_a, m2_a
    if count_a == 0:
        return count_b, mean_b, m2_b
    delta = mean_b - mean_a
    return total, mean_a + delta * (count_b / total), m2_a + m2_b + delta.square() * (count_a * count_b / total)


def merge_comoments(count_a: int, mean_x_a: Tensor, mean_y_a: Tensor, c_a: Tensor, count_b: int, mean_x_b: Tensor,
                    mean_y_b: Tensor, c_b: Tensor) -> tuple[int, Tensor, Tensor, Tensor]:
    """(count, mean_x, mean_y, C) of the union, C = sum (x - mean_x)(y - mean_y)^T of shape (Dx, Dy).

    With y = x, C is the scatter matrix (X^T X about the mean); the second moments of the parts add,
    plus the outer product of the difference of their means.
    """
    total = count_a + count_b
    if count_b == 0:
        return count_a, mean_x_a, mean_y_a, c_a
    if count_a == 0:
        return count_b, mean_x_b, mean_y_b, c_b
    dx, dy = mean_x_b - mean_x_a, mean_y_b - mean_y_a
    c = c_a + c_b + torch.outer(dx, dy) * (count_a * count_b / total)
    return total, mean_x_a + dx * (count_b / total), mean_y_a + dy * (count_b / total), c


def _order(values: Tensor, index: Tensor) -> Tensor:
    """Per row, the column order by |value| descending, then index ascending; EMPTY slots last."""
    by_index = index.argsort(dim=1, stable=True)
    mag = values.abs().gather(1, by_index)
    mag = torch.where(index.gather(1, by_index) == EMPTY, torch.full_like(mag, -1.0), mag)
    return by_index.gather(1, mag.argsort(dim=1, descending=True, stable=True))


def top_k_sorted(acts: Tensor, index: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The top-k of every column of `acts` (N, F) by |value|, as (F, min(k, N)) values and
    global indices (`index`: (N,), ascending), ties to the earlier index."""
    order = acts.abs().argsort(dim=0, descending=True, stable=True)[:k]  # stable: rows are in index order
    return acts.gather(0, order).T.contiguous(), index[order].T.contiguous()


def merge_top_k(values_a: Tensor, index_a: Tensor, values_b: Tensor, index_b: Tensor, k: int,
                drop_empty: bool = True) -> tuple[Tensor, Tensor]:
    """The top-k (F, <=k) of the union of two top-k lists (F, ka), (F, kb). With `drop_empty`,
    trailing columns that are EMPTY in every row are dropped (reads one number on the host)."""
    values, index = torch.cat([values_a, values_b], dim=1), torch.cat([index_a, index_b], dim=1)
    keep = _order(values, index)[:, :k]
    values, index = values.gather(1, keep), index.gather(1, keep)
    if not drop_empty or not index.numel():
        return values, index
    filled = int((index != EMPTY).sum(1).max())
    return values[:, :filled], index[:, :filled]


def pad_top_k(values: Tensor, index: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(F, <=k) -> (F, k), unused slots EMPTY (so parts of different lengths can be gathered)."""
    missing = k - values.shape[1]
    if missing <= 0:
        return values, index
    return (torch.cat([values, values.new_zeros(values.shape[0], missing)], dim=1),
            torch.cat([index, index.new_full((index.shape[0], missing), EMPTY)], dim=1))
