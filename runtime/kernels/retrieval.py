"""INT8 top-k retrieval over an embedding table (recommendation / link-prediction serving)."""

from __future__ import annotations

import numpy as np
from qgnn.runtime.kernels import _checks as ck
from qgnn.runtime.kernels._ext import ext


def _id_set(fn: str, name: str, value: np.ndarray | None, n: int) -> np.ndarray | None:
    """Sorted unique int64 ids within [0, n), or None."""
    if value is None:
        return None
    uniq = np.unique(ck.ids(fn, name, value))
    if uniq.size and (uniq[0] < 0 or uniq[-1] >= n):
        bad = int(uniq[0]) if uniq[0] < 0 else int(uniq[-1])
        raise ValueError(f"{fn}: {name} holds id {bad}, outside the table's rows [0, {n})")
    return uniq


def int8_topk(query: np.ndarray, table: np.ndarray, k: int, exclude: np.ndarray | None = None,
              candidates: np.ndarray | None = None, *,
              num_threads: int = 2, isa: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` rows of ``table`` (N, D) int8 by exact integer dot product with ``query``.

    ``query`` is (D,) int8 or int32 (int32 must be small enough that no score can overflow
    int32). ``candidates`` restricts the search to those row ids (duplicates are ignored);
    ``exclude`` ids are never returned. Returns ``(ids int64, scores int32)`` sorted by score
    descending, ties to the smaller id; fewer than ``k`` when fewer rows are eligible.
    """
    fn = "int8_topk"
    tab = ck.tensor(fn, "table", table, np.int8, 2)
    q = np.asarray(query)
    if q.dtype not in (np.dtype(np.int8), np.dtype(np.int32)):
        raise ValueError(f"{fn}: query must have dtype int8 or int32, got {q.dtype}")
    q = ck.tensor(fn, "query", q, q.dtype.type, 1)
    n = tab.shape[0]
    return ext(isa).topk_s8(
        q, tab, ck.integer(fn, "k", k, 1, np.iinfo(np.int64).max),
        _id_set(fn, "exclude", exclude, n), _id_set(fn, "candidates", candidates, n),
        ck.threads(fn, num_threads))
