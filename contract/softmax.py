"""GAT's edge softmax on quantised logits, exact by construction.

The INT8 GAT quantises its attention logits (one scale ``s``) before the softmax, so over a
destination ``v``'s edges the softmax depends only on ``d_e = max_q(v, h) - q_e`` (an integer in
``0 .. 2^bits - 1``) and on ``s``: ``alpha_e = exp(-d_e s) / sum_e' exp(-d_e' s)``. The contract
fixes it as integers:

* ``T[d] = round(2^30 * exp(-d * s))`` (int64, ``d = 0 .. 2^bits - 1``), computed once at export
  by :func:`softmax_table` and stored in the model, so no serving host evaluates ``exp``;
* per edge ``t_e = T[max_q - q_e]``, per destination and head ``sum_v = sum_e t_e`` in int64
  (exact and order-free; ``T[0] = 2^30`` makes it ``>= 2^30``);
* ``alpha_e = float32(float64(t_e) / float64(sum_v))``.

Both operands of the division are integers below ``2^53`` (entries ``<= 2^30``, in-degree
``<= MAX_DEGREE``), so they are exact in float64, IEEE division is correctly rounded and the
float32 conversion is round-to-nearest: every platform, kernel and ISA level gives the same
bits. The float softmax training runs agrees with these alphas to about 1e-7 relative.
"""

from __future__ import annotations

import numpy as np

ONE = 1 << 30  # T[0]: the weight of a destination's largest logit
MAX_DEGREE = (1 << 23) - 1  # in-edges per destination: MAX_DEGREE * 2^30 < 2^53, exact in float64
MAX_BITS = 8


def softmax_table(scale: np.floating | float, bits: int) -> np.ndarray:
    """(2^bits,) int64 ``T[d] = round_half_even(2^30 * exp(-d * s))`` for the logits site's
    float32 scale ``s`` (the module docstring). ValueError for a scale that is not a finite
    float32 > 0 or bits outside 1..8."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) \
            or not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"softmax_table: bits must be an integer in [1, {MAX_BITS}], got "
                         f"{bits!r}")
    arr = np.asarray(scale)
    if arr.size != 1 or arr.dtype.kind != "f":
        raise ValueError(f"softmax_table: scale must be one float, got {arr.dtype} {arr.shape}")
    with np.errstate(over="ignore", under="ignore"):
        s = float(np.float32(arr.reshape(())[()]))
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"softmax_table: scale must be a finite float32 > 0, got {scale!r}")
    d = np.arange(1 << int(bits), dtype=np.float64)
    with np.errstate(under="ignore"):
        return np.rint(ONE * np.exp(-d * s)).astype(np.int64)


def check_table(table: object, who: str = "softmax") -> np.ndarray:
    """``table`` as the 1-D int64 array of a :func:`softmax_table`: length ``2^k`` (k in 1..8),
    ``T[0] = 2^30``, non-increasing, no entry below 0. ValueError naming ``who`` otherwise."""
    arr = np.asarray(table)
    if arr.dtype != np.int64 or arr.ndim != 1:
        raise ValueError(f"{who}: table must be a 1-D int64 array, got {arr.dtype} {arr.shape}")
    n = arr.size
    if n < 2 or n > 1 << MAX_BITS or n & (n - 1):
        raise ValueError(f"{who}: table must hold 2^bits entries (bits 1..{MAX_BITS}), got {n}")
    if arr[0] != ONE:
        raise ValueError(f"{who}: table[0] must be 2^30 = {ONE}, got {int(arr[0])}")
    if arr[-1] < 0 or np.any(np.diff(arr) > 0):
        raise ValueError(f"{who}: table entries must be >= 0 and non-increasing")
    return arr


def edge_softmax_q(logits_q: np.ndarray, dst: np.ndarray, num_dst: int, table: np.ndarray,
                   who: str = "softmax") -> np.ndarray:
    """(E, H) float32 alphas of uint8 (E, H) ``logits_q`` over each destination's edges (``dst``
    (E,) int64 in ``[0, num_dst)``, any order), exactly as the module docstring. ValueError for a
    bad table, a logit beyond the table or a destination with more than MAX_DEGREE edges."""
    table = check_table(table, who)
    q = np.asarray(logits_q)
    if q.dtype != np.uint8 or q.ndim != 2:
        raise ValueError(f"{who}: logits_q must be uint8 (E, H), got {q.dtype} {q.shape}")
    if q.size and int(q.max()) >= table.size:
        raise ValueError(f"{who}: logit {int(q.max())} is beyond the table of {table.size} "
                         f"entries (2^bits)")
    dst = np.asarray(dst, np.int64)
    degree = np.bincount(dst, minlength=num_dst)
    if degree.size and int(degree.max()) > MAX_DEGREE:
        raise ValueError(f"{who}: destination {int(degree.argmax())} has {int(degree.max())} "
                         f"in-edges, more than {MAX_DEGREE} (the float64 sums would not be exact)")
    q = q.astype(np.int64)
    top = np.zeros((num_dst, q.shape[1]), np.int64)  # logits are >= 0
    np.maximum.at(top, dst, q)
    t = table[top[dst] - q]
    total = np.zeros((num_dst, q.shape[1]), np.int64)
    np.add.at(total, dst, t)
    return (t.astype(np.float64) / total[dst].astype(np.float64)).astype(np.float32)
