"""The contract's affine quantisation of float32 arrays, multi-threaded, in one pass.

``quantize_u8``: activations, ``clamp(rint(x / scale) + zero_point, 0, 2^bits - 1)``;
``quantize_s8``: symmetric weights/embeddings, ``clamp(rint(x / scale), -127, 127)``;
``dequantize_u8``: ``float32(q - zero_point) * scale``. NaN inputs are refused.
``requant_multiplier`` forms the kernels' float32 multiplier exactly as the exporter does.
"""

from __future__ import annotations

import numpy as np
from qgnn.contract import multiplier
from qgnn.runtime.kernels import _checks as ck
from qgnn.runtime.kernels._ext import ext


def requant_multiplier(x_scale: float, y_scale: float,
                       w_scale: float | None = None) -> np.float32:
    """``M = float32(float32(s_x [* s_w]) / s_y)``, float32 operations left to right.

    The multiplier of :func:`qaggregate` (and per column of :func:`qlinear`); computing it any
    other way (in float64, or as ``s_x / s_y * s_w``) can change the last bit and so the output.
    """
    fn = "requant_multiplier"
    s_x = np.float32(ck.positive_f32(fn, "x_scale", x_scale))
    s_y = np.float32(ck.positive_f32(fn, "y_scale", y_scale))
    s_w = None if w_scale is None else np.float32(ck.positive_f32(fn, "w_scale", w_scale))
    mult = multiplier(s_x, s_y, s_w)
    ck.positive_f32(fn, "multiplier", mult)
    return mult


def quantize_u8(x: np.ndarray, scale: float, zero_point: int, *, bits: int = 8,
                num_threads: int = 2, isa: str | None = None) -> np.ndarray:
    """float32 (any shape) -> uint8 in [0, 2^bits - 1], same shape."""
    fn = "quantize_u8"
    return ext(isa).quantize_u8(
        ck.tensor(fn, "x", x, np.float32, None), ck.positive_f32(fn, "scale", scale),
        ck.zero_point(fn, "zero_point", zero_point), ck.bits(fn, bits),
        ck.threads(fn, num_threads))


def quantize_s8(x: np.ndarray, scale: float, *, num_threads: int = 2,
                isa: str | None = None) -> np.ndarray:
    """float32 (any shape) -> int8 in [-127, 127], same shape."""
    fn = "quantize_s8"
    return ext(isa).quantize_s8(
        ck.tensor(fn, "x", x, np.float32, None), ck.positive_f32(fn, "scale", scale),
        ck.threads(fn, num_threads))


def dequantize_u8(q: np.ndarray, scale: float, zero_point: int, *,
                  num_threads: int = 2, isa: str | None = None) -> np.ndarray:
    """uint8 (any shape) -> float32, same shape."""
    fn = "dequantize_u8"
    return ext(isa).dequantize_u8(
        ck.tensor(fn, "q", q, np.uint8, None), ck.positive_f32(fn, "scale", scale),
        ck.zero_point(fn, "zero_point", zero_point), ck.threads(fn, num_threads))
