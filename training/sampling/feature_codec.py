"""A per-column affine uint8 code for input features kept in host memory and sent to the device.

Host-to-device traffic in minibatch training is input feature rows (docs/gns.md), and a float32
row costs four times its uint8 code. Column ``j`` is stored as ``q = round((x - low_j) / step_j)``
with ``low_j = min x[:, j]`` and ``step_j = (max x[:, j] - low_j) / 255``, and decoded on the
device as ``low_j + q * step_j``: the whole observed range is kept (nothing clips) and each value
comes back within half a step. Encoding runs in row chunks, so a 10M x 128 matrix needs no float
temporary of its own size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LEVELS = 255  # uint8 codes 0..255
DEFAULT_CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class ColumnCode:
    """``x[:, j] ~ low[j] + q[:, j] * step[j]``; ``step`` is 0 for a constant column."""

    low: torch.Tensor  # (F,) float32
    step: torch.Tensor  # (F,) float32

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, F)`` -> float32 rows, on the device ``codes`` (and this code) live on."""
        if codes.dtype != torch.uint8 or codes.dim() != 2 or codes.shape[1] != self.low.numel():
            raise ValueError(f"ColumnCode.decode: expected uint8 (N, {self.low.numel()}), got "
                             f"{codes.dtype} {tuple(codes.shape)}")
        return torch.addcmul(self.low, codes.to(self.low.dtype), self.step)


def fit_column_code(x: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ColumnCode:
    """Per-column min/max of a float matrix, in row chunks; non-finite values are refused
    (a NaN would silently become code 0)."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"fit_column_code: expected a non-empty (N, F) matrix, got {x.shape}")
    low = np.full(x.shape[1], np.inf)
    high = np.full(x.shape[1], -np.inf)
    for s in range(0, x.shape[0], chunk_rows):
        block = x[s:s + chunk_rows]
        if not np.isfinite(block).all():
            raise ValueError(f"fit_column_code: features hold NaN or infinite values (rows "
                             f"{s}..{s + block.shape[0] - 1}); clean them before training")
        np.minimum(low, block.min(axis=0), out=low)
        np.maximum(high, block.max(axis=0), out=high)
    step = (high - low) / LEVELS
    return ColumnCode(torch.from_numpy(low.astype(np.float32)),
                      torch.from_numpy(step.astype(np.float32)))


def encode_columns(x: np.ndarray, code: ColumnCode,
                   chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """uint8 ``(N, F)`` codes of ``x`` under ``code`` (nearest level, clamped to 0..255)."""
    low = code.low.numpy().astype(np.float64)
    step = code.step.numpy().astype(np.float64)
    inv = np.divide(1.0, step, out=np.zeros_like(step), where=step > 0)
    out = np.empty(x.shape, np.uint8)
    for s in range(0, x.shape[0], chunk_rows):
        q = (x[s:s + chunk_rows] - low) * inv
        np.rint(q, out=q)
        np.clip(q, 0, LEVELS, out=q)
        out[s:s + chunk_rows] = q
    return out
