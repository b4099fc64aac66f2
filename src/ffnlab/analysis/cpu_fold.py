"""The CPU's fold of a batch into a full neuron-statistics state, in one compiled loop (numba).

Once a layer's state holds k triggers per neuron, every batch (N, F) of its activations is read
for: moment sums about a shift, the count above a threshold, each value's histogram bin, and the
values whose |activation| beats the neuron's k-th best. Eagerly (torch and numpy) that is a dozen
passes over the batch and a sort of the candidates; here it is one pass over the rows, reading
bf16 activations as they come out of autocast (2 bytes a value), and each candidate is inserted
into its neuron's sorted top-k in place. Measured on one core, 1M activations (F = 1024): about
1.4 ms, against about 3.7 ms for the eager passes and 0.9 ms for their candidate merge.

Results: the same top-k (values and token indices, by the one order of `analysis.merge`: |value|
descending, then token ascending; a batch's tokens come after every kept one, so an equal |value|
never displaces a kept token), the same histogram bins and counts as the eager fold (float32
`x * scale + to_zero`, no fused multiply-add, truncated: as torch computes it), and moment sums
equal to float rounding (float32 partial sums over 64 rows, added in float64). A NaN activation
lands in bin 0 instead of failing.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

_ROWS = 64  # rows of float32 partial sums before they are added into the float64 totals


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _fold_row(x, token, shift, scale, to_zero, top_bin, threshold, a1, a2, above, hist, bins, bar, top_v, top_i):
    """One row (F,) float32 of token `token` into the float32 partial sums and the state."""
    f, k = x.shape[0], top_v.shape[1]
    for c in range(f):
        v = x[c]
        d = v - shift[c]
        a1[c] += d
        a2[c] += d * d
        above[c] += np.int32(1) if v > threshold else np.int32(0)
        b = v * scale + to_zero
        if not b >= 0:  # also a NaN
            b = np.float32(0.0)
        if b > top_bin:
            b = top_bin
        bins[c] = np.int32(b)
    for c in range(f):
        hist[c, bins[c]] += 1
    for c in range(f):
        m = abs(x[c])
        if m > bar[c]:  # beats the k-th best: insert after every kept entry of |value| >= m
            j = k - 1
            while j > 0 and abs(top_v[c, j - 1]) < m:
                top_v[c, j] = top_v[c, j - 1]
                top_i[c, j] = top_i[c, j - 1]
                j -= 1
            top_v[c, j] = x[c]
            top_i[c, j] = token
            bar[c] = abs(top_v[c, k - 1])


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _fold_bf16(codes, index, shift, scale, to_zero, top_bin, threshold, s1, s2, above, hist, top_v, top_i):
    n, f = codes.shape
    wide = np.empty(f, np.uint32)
    x = wide.view(np.float32)  # a bf16 value is the top half of the float32 with the same bits
    a1, a2 = np.zeros(f, np.float32), np.zeros(f, np.float32)
    count, bins = np.zeros(f, np.int32), np.empty(f, np.int32)
    bar = np.empty(f, np.float32)
    for c in range(f):
        bar[c] = abs(top_v[c, top_v.shape[1] - 1])
    for r in range(n):
        row = codes[r]
        for c in range(f):
            wide[c] = np.uint32(row[c]) << 16
        _fold_row(x, index[r], shift, scale, to_zero, top_bin, threshold, a1, a2, count, hist, bins, bar, top_v, top_i)
        if r % _ROWS == _ROWS - 1 or r == n - 1:
            for c in range(f):
                s1[c] += a1[c]
                s2[c] += a2[c]
                a1[c] = 0.0
                a2[c] = 0.0
    for c in range(f):
        above[c] += count[c]


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _fold_f32(acts, index, shift, scale, to_zero, top_bin, threshold, s1, s2, above, hist, top_v, top_i):
    n, f = acts.shape
    a1, a2 = np.zeros(f, np.float32), np.zeros(f, np.float32)
    count, bins = np.zeros(f, np.int32), np.empty(f, np.int32)
    bar = np.empty(f, np.float32)
    for c in range(f):
        bar[c] = abs(top_v[c, top_v.shape[1] - 1])
    for r in range(n):
        _fold_row(acts[r], index[r], shift, scale, to_zero, top_bin, threshold, a1, a2, count, hist, bins, bar, top_v,
                  top_i)
        if r % _ROWS == _ROWS - 1 or r == n - 1:
            for c in range(f):
                s1[c] += a1[c]
                s2[c] += a2[c]
                a1[c] = 0.0
                a2[c] = 0.0
    for c in range(f):
        above[c] += count[c]


def fold_full(acts: Tensor, index: Tensor, shift: Tensor, scale: float, to_zero: float, top_bin: int,
              threshold: float, above: Tensor, hist: Tensor, top_values: Tensor, top_index: Tensor) -> Tensor:
    """Fold CPU activations (N, F) of tokens `index` (N,) into a full state in place (`above` (F,)
    int64, `hist` (F, bins) int64, the sorted top-k (F, k) float32 / int64, all contiguous); return
    the sums of deviations from `shift` (F,) and of their squares, (2, F) float64."""
    sums = np.zeros((2, acts.shape[1]))
    common = (index.numpy(), shift.float().contiguous().numpy(), np.float32(scale), np.float32(to_zero),
              np.float32(top_bin), np.float32(threshold), sums[0], sums[1], above.numpy(), hist.numpy(),
              top_values.numpy(), top_index.numpy())
    if acts.dtype == torch.bfloat16:
        _fold_bf16(acts.contiguous().view(torch.int16).numpy().view(np.uint16), *common)
    else:
        _fold_f32(acts.float().contiguous().numpy(), *common)
    return torch.from_numpy(sums)
