"""Requantisation: the float32 multiplier and the rounding every integer site goes through.

``M = float32(float32(s_x [* s_w]) / s_y)``, each step a float32 operation left to right, and
``y = saturate(round_half_even(float32(acc) * M) + zp)`` into ``[0, 2^bits - 1]``. Training's
fake quantisers, the ONNX graphs the exporter writes, the C kernels and the numpy oracles all
compute exactly this; a change here is a change of the bundle format.
"""

from __future__ import annotations

import numpy as np


def multiplier(x_scale: np.float32 | np.ndarray, y_scale: np.float32 | np.ndarray,
               w_scale: np.float32 | np.ndarray | None = None) -> np.float32 | np.ndarray:
    """M = float32(float32(s_x [* s_w]) / s_y), each step a float32 operation, left to right;
    elementwise over per-channel scales (a float32 scalar when every scale is one)."""
    with np.errstate(over="ignore", under="ignore"):
        numerator = np.asarray(x_scale, np.float32)
        if w_scale is not None:
            numerator = np.multiply(numerator, np.asarray(w_scale, np.float32),
                                    dtype=np.float32)
        out = np.divide(numerator, np.asarray(y_scale, np.float32), dtype=np.float32)
    return np.float32(out) if out.ndim == 0 else out


def mean_multiplier(mult: np.float32, deg: np.ndarray) -> np.ndarray:
    """(D, 1) float32 M / float32(max(deg, 1)): a mean is a sum with a per-row multiplier."""
    return (np.float32(mult) / np.maximum(deg, 1).astype(np.float32))[:, None]


def requantise(acc: np.ndarray, mult: np.float32 | np.ndarray, zero_point: int,
               bits: int) -> np.ndarray:
    """uint8 saturate(round_half_even(float32(acc) * mult) + zp) into [0, 2^bits - 1].

    ``mult`` is a float32 scalar, a (D, 1) column or a (J,) row. The zero point is added in
    integer arithmetic (the clip to +-2^40 keeps the int64 conversion exact).
    """
    with np.errstate(over="ignore"):  # +-inf clips like any value beyond the range
        scaled = acc.astype(np.float32) * np.asarray(mult, dtype=np.float32)
    rounded = np.clip(np.rint(scaled), -(2.0 ** 40), 2.0 ** 40).astype(np.int64)
    return np.clip(rounded + zero_point, 0, (1 << bits) - 1).astype(np.uint8)


def quantize_bias(bias: np.ndarray, x_scale: np.float32 | np.ndarray,
                  w_scale: np.float32 | np.ndarray) -> np.ndarray:
    """``rint(bias / float32(s_x * s_w))`` (float32 steps; integral float32 values, which the
    caller checks against int32 before casting): a bias joining a matrix product's int32
    accumulator, one per output channel (docs/integer-formulation.md rule 2)."""
    step = np.multiply(np.asarray(x_scale, np.float32), np.asarray(w_scale, np.float32),
                       dtype=np.float32)
    return np.rint(np.divide(np.asarray(bias, np.float32), step, dtype=np.float32))
