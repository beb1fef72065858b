"""QLinear: the u8 x s8 -> int32 matrix product with fused requantisation."""

from __future__ import annotations

from typing import Any

import numpy as np
from qgnn.runtime.kernels import _checks as ck
from qgnn.runtime.kernels._ext import ext


def qlinear(x_q: np.ndarray, x_zp: int, w_q: np.ndarray, bias_int32: np.ndarray | None,
            multiplier: float | np.ndarray, y_zp: int, *, bits: int = 8,
            num_threads: int = 2, table: np.ndarray | None = None,
            isa: str | None = None, packed: Any = None) -> np.ndarray:
    """uint8 (N, K) x int8 (K, M) -> uint8 (N, M).

    ``w_q`` is (K, M), the layout of ONNX MatMulInteger's B, so an exported initializer is passed
    as is. ``acc = sum_k (x_q - x_zp) * w_q + bias_int32`` in int32 (wrapping modulo 2^32 like
    MatMulInteger + Add; it cannot overflow without bias while K <= 65,793);
    ``y = clamp(rint(float32(acc) * multiplier[m]) + y_zp, 0, 2^bits - 1)`` with ``multiplier``
    a scalar (per-tensor weights) or (M,) (per-output-channel), rounded to float32. ``table``
    ((1, 256) or (M, 256) uint8) then maps each output byte as
    :func:`qgnn.runtime.kernels.lut_u8` would, in the same pass. ``packed``: what
    :func:`qlinear_pack` returned for this ``w_q`` at this ``isa``, so the call does not pack
    ``w_q`` again (the same bytes).
    """
    fn = "qlinear"
    w = ck.tensor(fn, "w_q", w_q, np.int8, 2)
    mult = np.asarray(multiplier)
    if mult.ndim == 0:
        mult = np.full(w.shape[1], ck.positive_f32(fn, "multiplier", mult), dtype=np.float32)
    elif mult.ndim != 1 or not np.issubdtype(mult.dtype, np.floating):
        raise ValueError(f"{fn}: multiplier must be a float scalar or a 1-D float array, "
                         f"got dtype {mult.dtype} shape {mult.shape}")
    else:
        with np.errstate(over="ignore"):
            mult = np.ascontiguousarray(mult, dtype=np.float32)
    return ext(isa).qlinear(
        ck.tensor(fn, "x_q", x_q, np.uint8, 2), ck.zero_point(fn, "x_zp", x_zp), w,
        ck.optional_tensor(fn, "bias_int32", bias_int32, np.int32, 1), mult,
        ck.zero_point(fn, "y_zp", y_zp), ck.bits(fn, bits), ck.threads(fn, num_threads),
        None if table is None else ck.tensor(fn, "table", table, np.uint8, 2), packed)


def qlinear_pack(w_q: np.ndarray, *, isa: str | None = None) -> Any:
    """``w_q`` (K, M) int8 in the ``isa`` level's packed layout with its column sums, for
    :func:`qlinear`'s ``packed``: a caller that multiplies by one weight many times (the engine,
    once per layer and request) packs it once. Packing a 1433 x 64 weight cost more than a
    16-row product with it. Opaque; valid only at the level that made it."""
    return ext(isa).qlinear_pack(ck.tensor("qlinear_pack", "w_q", w_q, np.int8, 2))
