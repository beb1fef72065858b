"""Checks on arrays read from a file, whose errors name that file (not a Graph field)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def ids_in_range(path: Path | str, ids: np.ndarray, n: int, what: str = "node id") -> None:
    """Every id in ``[0, n)``, else ValueError with the first offending value."""
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise ValueError(f"{path}: {what} {bad} out of range [0, {n})")


def require_finite(path: Path | str, values: np.ndarray, what: str = "feature") -> None:
    """No nan/inf in a 2-D ``(rows, cols)`` array; the error gives row and column."""
    finite = np.isfinite(values)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{path}: non-finite {what} {values[row, col]} at row {row}, "
                         f"column {col}")
