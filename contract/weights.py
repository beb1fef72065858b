"""How integer weights are stored in an exported graph: uint8 with zero point 128.

A weight's value is a symmetric int8 ``w`` in ``[-127, 127]``. The graph stores ``w + 128`` as
uint8 and hands ``MatMulInteger`` the weight zero point 128, so the product is the same integer
``sum_k (x_k - zp_x) * w_k``. Why not int8: onnxruntime's uint8 x int8 kernel on AVX2 and on
AVX-512 without VNNI adds pairs of products in saturating 16-bit lanes (VPMADDUBSW; its
quantization docs, "Data type selection", and issues #6004, #16105), so full-range int8
weights come out wrong there (10 % of a Cora GCN layer's accumulators, by up to 64,508). Its
uint8 x uint8 kernels widen to 16 bits first and are exact on every CPU.
"""

from __future__ import annotations

import numpy as np

WEIGHT_STORAGE_OFFSET = 128  # stored = value + 128; also the stored zero point


def weight_storage(values: np.ndarray) -> np.ndarray:
    """uint8 storage of int8 weight values (``w + 128``)."""
    values = np.asarray(values)
    if values.dtype != np.int8:
        raise ValueError(f"weight values must be int8, got {values.dtype}")
    return (values.view(np.uint8) ^ np.uint8(0x80)).astype(np.uint8)


def weight_values(stored: np.ndarray, zero_point: np.ndarray | int) -> np.ndarray | None:
    """The int8 values of uint8 weights stored with ``zero_point`` (scalar or one per column),
    or None when they are not ``w + 128`` storage of int8 values (a zero point other than 128)."""
    stored, zp = np.asarray(stored), np.asarray(zero_point)
    if stored.dtype != np.uint8 or zp.dtype != np.uint8:
        return None
    if not np.all(zp == WEIGHT_STORAGE_OFFSET):
        return None
    return (stored ^ np.uint8(0x80)).view(np.int8)
