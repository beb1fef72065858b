"""GAT's attention scores: per-head integer dot products, one float32 scale each.

``score[n, h] = float32(sum_c (lin_q[n, h, c] - zp_lin) * att_q[h, c]) * float32(s_lin * s_att[h])``

The dot is exact in int32 (and in float32: ``|dot| <= C * 255 * 127 < 2^24`` for ``C <= 512``),
so the score does not depend on a summation order. A float32 sum of dequantised products would
(numpy sums pairwise, onnxruntime's ``ReduceSum`` in Eigen's packet order, a C kernel in yet
another), and at rounding ties the quantised logits would differ. The exporter writes the dot
as ``MatMulInteger`` with the block-diagonal :func:`attention_matrix`, exact on every
onnxruntime CPU kernel; the numpy oracle and the engine compute the same integers.
"""

from __future__ import annotations

import numpy as np
from qgnn.contract.arithmetic import multiplier

MAX_HEAD_DIM = 512  # largest C for which every dot is exact in float32


def score_scale(lin_scale: np.ndarray | np.float32, att_scale: np.ndarray | np.float32
                ) -> np.ndarray:
    """(H,) or () float32 ``float32(s_lin * s_att)`` (per head when ``att`` is per channel)."""
    return np.asarray(multiplier(lin_scale, np.float32(1.0), att_scale), np.float32)


def attention_matrix(att_q: np.ndarray) -> np.ndarray:
    """(H*C, H) int8 block-diagonal: column ``h`` holds head ``h``'s ``att_q[h]`` in rows
    ``h*C .. h*C + C - 1`` and zeros elsewhere, so ``lin (N, H*C) @ it`` is every head's dot."""
    att_q = np.asarray(att_q)
    if att_q.ndim != 2 or att_q.dtype != np.int8:
        raise ValueError(f"attention vector must be int8 (heads, head_dim), got {att_q.dtype} "
                         f"{att_q.shape}")
    heads, dim = att_q.shape
    if dim > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {dim} exceeds {MAX_HEAD_DIM}: the dot would not be exact")
    out = np.zeros((heads * dim, heads), np.int8)
    for h in range(heads):
        out[h * dim:(h + 1) * dim, h] = att_q[h]
    return out


def head_scores(lin_q: np.ndarray, lin_zero_point: int, att_q: np.ndarray,
                scale: np.ndarray | np.float32) -> np.ndarray:
    """(N, H) float32 scores of (N, H*C) quantised ``lin`` (the module docstring)."""
    heads, dim = np.shape(att_q)
    centred = np.asarray(lin_q, np.int64).reshape(-1, heads, dim) - int(lin_zero_point)
    dots = np.einsum("nhc,hc->nh", centred, np.asarray(att_q, np.int64))
    return np.multiply(dots.astype(np.float32), np.asarray(scale, np.float32), dtype=np.float32)
