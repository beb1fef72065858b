"""INT8 node embeddings: exact top-k retrieval and pair scoring over ``z_i = s_i * q_i``.

The bundle stores every node's final embedding as int8 values ``q_i`` (D,) with a float32 scale
``s_i`` per row, so the decoder logit of a pair is ``s_u * s_i * (q_u . q_i)``: an exact integer
dot product with both scales applied once. Ranking user ``u``'s items by ``s_i * dot_i`` is not
ranking by ``dot_i`` when the scales differ, and the compiled top-k kernel ranks integer dot
products of one int8 table. So at load the engine requantises a shortlist table to one common
scale ``S = max_i s_i``: ``t_i = rint(q_i s_i / S)`` (int8, same size as the original), and
records the largest per-value error ``err = max |s_i q_i - S t_i|`` (<= S / 2; 0 when all
scales are equal). A query takes the kernel's top ``k'`` rows by ``q_u . t_i`` (one pass over
the table, at the kernel's speed), rescales them exactly with the original rows, and certifies
the answer: an unlisted row scores at most ``S * t_(k') + err * ||q_u||_1`` where ``t_(k')`` is
the last listed integer score; while that bound could reach the k-th exact score the shortlist
is deepened (``k' *= 4``). The answer is the exact top-k of the stored INT8 embeddings (ties by
ascending id).

Updates never write the base rows: refreshed and new rows live in a patch (copy-on-write state
swapped atomically); the patch is scored exactly in numpy and the kernel excludes the patched
ids. A patch past a few percent of the rows is folded into a new base.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from qgnn.runtime import kernels
from qgnn.runtime.kernels._ext import ext

EMBEDDING_QMAX = 127
COMPACT_FRACTION = 0.05  # fold the patch into the base past this share of the rows
FIRST_SHORTLIST = 4  # k' = 4 k to start with
SHORTLIST_GROWTH = 4


def quantize_rows(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: ``s = max|z| / 127`` (1 for an all-zero row), ``q = clamp(
    rint(z / s), -127, 127)``. Returns (int8 (n, D), float32 (n,))."""
    z = np.asarray(z, np.float32)
    peak = np.abs(z).max(axis=1, initial=0.0)
    scale = np.where(peak > 0, peak / np.float32(EMBEDDING_QMAX), np.float32(1.0)).astype(
        np.float32)
    q = np.clip(np.rint(z / scale[:, None]), -EMBEDDING_QMAX, EMBEDDING_QMAX).astype(np.int8)
    return q, scale


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """Float32 probabilities of float64 logits, without overflow warnings."""
    out = np.empty_like(logit, dtype=np.float64)
    pos = logit >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-logit[pos]))
    e = np.exp(logit[~pos])
    out[~pos] = e / (1.0 + e)
    return out.astype(np.float32)


def pair_logits(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Dot-decoder logits float64 (n,) of pairs given as int8 rows (n, 2, D) and their scales
    (n, 2): ``s_u s_v (q_u . q_v)``, the integer dot exact and both scales applied once."""
    q = values.astype(np.int32)
    s = scales.astype(np.float64)
    return s[:, 0] * s[:, 1] * np.einsum("nd,nd->n", q[:, 0], q[:, 1])


def dequantize(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 (n, D) ``s_i * q_i`` of int8 rows."""
    return values.astype(np.float32) * scales[:, None]


def best_k(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (ids, scores) by descending score, ties by ascending id: the one order
    every top-k answer uses, so partial top-k lists (per chunk, per shard) merge exactly."""
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


@dataclass(frozen=True)
class _Base:
    """The bundle's rows plus the common-scale shortlist table (module docstring)."""

    values: np.ndarray  # (N, D) int8
    scales: np.ndarray  # (N,) float32
    shortlist: np.ndarray  # (N, D) int8 at the common scale
    common_scale: float
    error: float  # max |s_i q_i - S t_i|

    @classmethod
    def build(cls, values: np.ndarray, scales: np.ndarray) -> _Base:
        if not scales.size or float(scales.min()) == float(scales.max()):
            common = float(scales.max(initial=1.0))
            return cls(values, scales, values, common, 0.0)
        common = np.float64(scales.max())
        ratio = (scales.astype(np.float64) / common)[:, None]
        shortlist = np.empty(values.shape, np.int8)
        error = 0.0
        for i in range(0, values.shape[0], 65536):  # bounded temporaries
            exact = values[i:i + 65536].astype(np.float64) * ratio[i:i + 65536]
            t = np.rint(exact)
            shortlist[i:i + 65536] = t
            error = max(error, float(np.abs(exact - t).max(initial=0.0)))
        return cls(values, scales, shortlist, float(common), error * float(common))


@dataclass(frozen=True)
class _State:
    base: _Base
    num_rows: int
    patch_ids: np.ndarray  # (P,) sorted ids whose current row is in the patch
    patch_values: np.ndarray  # (P, D) int8
    patch_scales: np.ndarray  # (P,) float32


class EmbeddingIndex:
    """The served INT8 embedding table: row lookup, pair logits, exact top-k (module doc)."""

    def __init__(self, values: np.ndarray, scales: np.ndarray, *, threads: int = 2,
                 isa: str | None = None) -> None:
        """``isa``: the kernels' ISA level for top-k; None takes the default level, or numpy on
        a host without the compiled kernels."""
        if values.ndim != 2 or values.dtype != np.int8:
            raise ValueError(f"EmbeddingIndex: values must be int8 (N, D), got {values.dtype} "
                             f"{values.shape}")
        if scales.shape != (values.shape[0],) or scales.dtype != np.float32:
            raise ValueError(f"EmbeddingIndex: scales must be float32 ({values.shape[0]},), got "
                             f"{scales.dtype} {scales.shape}")
        if scales.size and not (np.isfinite(scales).all() and (scales > 0).all()):
            raise ValueError("EmbeddingIndex: scales must be finite and > 0")
        self.threads = threads
        if isa is None and kernels.available():
            isa = kernels.default_level()
        self.isa = isa
        self.dim = int(values.shape[1])
        self._lock = threading.Lock()
        self._state = _State(_Base.build(values, scales), int(values.shape[0]),
                             np.zeros(0, np.int64), np.zeros((0, self.dim), np.int8),
                             np.zeros(0, np.float32))

    @property
    def num_rows(self) -> int:
        return self._state.num_rows

    @staticmethod
    def _rows(st: _State, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_base = st.base.values.shape[0]
        inside = np.minimum(ids, max(n_base - 1, 0))
        values = (st.base.values.take(inside, axis=0) if n_base
                  else np.zeros((ids.size, st.patch_values.shape[1]), np.int8))
        scales = st.base.scales.take(inside) if n_base else np.ones(ids.size, np.float32)
        if st.patch_ids.size:
            at = np.minimum(np.searchsorted(st.patch_ids, ids), st.patch_ids.size - 1)
            hit = st.patch_ids[at] == ids
            values[hit] = st.patch_values[at[hit]]
            scales[hit] = st.patch_scales[at[hit]]
        return values, scales

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int8 (n, D), float32 (n,)) current rows of ``ids`` (each < num_rows)."""
        return self._rows(self._state, ids)

    def dequantized(self, ids: np.ndarray) -> np.ndarray:
        """(n, D) float32 ``s_i * q_i``."""
        return dequantize(*self.rows(ids))

    def update(self, ids: np.ndarray, values: np.ndarray, scales: np.ndarray) -> None:
        """Sets the rows of ``ids`` (existing ids, or ids from ``num_rows`` on, which grow the
        table); readers see the old or the new state, never a mix."""
        ids = np.asarray(ids, np.int64)
        with self._lock:
            st = self._state
            num_rows = max(st.num_rows, int(ids.max(initial=-1)) + 1)
            keep = ~np.isin(st.patch_ids, ids)
            all_ids = np.concatenate([st.patch_ids[keep], ids])
            order = np.argsort(all_ids, kind="stable")
            state = _State(st.base, num_rows, all_ids[order],
                           np.concatenate([st.patch_values[keep], values.astype(np.int8)])[order],
                           np.concatenate([st.patch_scales[keep],
                                           scales.astype(np.float32)])[order])
            if state.patch_ids.size > COMPACT_FRACTION * max(num_rows, 1):
                all_values, all_scales = self._rows(state, np.arange(num_rows, dtype=np.int64))
                state = _State(_Base.build(all_values, all_scales), num_rows,
                               np.zeros(0, np.int64), np.zeros((0, self.dim), np.int8),
                               np.zeros(0, np.float32))
            self._state = state

    def topk(self, query: np.ndarray, k: int, exclude: np.ndarray | None = None,
             candidates: np.ndarray | None = None,
             extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows with the largest ``s_i * (query . q_i)`` (query int8 (D,)), ties by
        ascending id, never an ``exclude`` id, only ``candidates`` when given (both sorted
        unique ids). ``extra`` = (ids, int8 rows, scales) replaces those ids' rows for this
        query only (request-local embeddings; ids may lie beyond the table). Returns (ids
        int64, ``s_i * dot`` float64), best first."""
        st = self._state
        base = st.base
        q = np.ascontiguousarray(query, np.int8)
        q32 = q.astype(np.int32)
        exclude = np.zeros(0, np.int64) if exclude is None else exclude
        exact_ids = [st.patch_ids]
        exact_values = [st.patch_values]
        exact_scales = [st.patch_scales]
        if extra is not None:
            keep = ~np.isin(st.patch_ids, extra[0])
            exact_ids = [st.patch_ids[keep], extra[0]]
            exact_values = [st.patch_values[keep], extra[1]]
            exact_scales = [st.patch_scales[keep], extra[2]]
        rows = np.concatenate(exact_ids)
        ok = ~np.isin(rows, exclude)
        if candidates is not None:
            ok &= np.isin(rows, candidates)
        exact_dots = np.concatenate(exact_values)[ok].astype(np.int32) @ q32
        fixed_ids = rows[ok]
        fixed_scores = np.concatenate(exact_scales)[ok].astype(np.float64) * exact_dots
        lo, hi, cand = _row_window(candidates, int(base.values.shape[0]))
        hidden = np.union1d(exclude, rows)
        hidden = hidden[(hidden >= lo) & (hidden < hi)] - lo
        table = base.shortlist[lo:hi]
        slack = base.error * float(np.abs(q32).sum())
        depth = FIRST_SHORTLIST * k
        while True:
            if hi > lo and (cand is None or cand.size):
                listed, dots = _kernel_topk(q, table, depth, hidden, cand, self.threads,
                                             self.isa)
            else:
                listed, dots = np.zeros(0, np.int64), np.zeros(0, np.int32)
            listed = listed + lo
            ids = np.concatenate([fixed_ids, listed])
            scores = np.concatenate([fixed_scores, base.scales.take(listed).astype(np.float64)
                                     * (base.values.take(listed, axis=0).astype(np.int32)
                                        @ q32)])
            ids, scores = best_k(ids, scores, k)
            if listed.size < depth:  # every eligible base row was listed
                return ids, scores
            bound = base.common_scale * float(dots[-1]) + slack
            if ids.size == k and bound < scores[-1]:
                return ids, scores
            depth *= SHORTLIST_GROWTH


def _row_window(candidates: np.ndarray | None, n_base: int
                ) -> tuple[int, int, np.ndarray | None]:
    """(lo, hi, candidates relative to lo or None): a contiguous run of candidate ids becomes
    a table slice (the kernel's fast path) instead of an id list."""
    if candidates is None:
        return 0, n_base, None
    inside = candidates[candidates < n_base]
    if not inside.size:
        return 0, 0, None
    lo, hi = int(inside[0]), int(inside[-1]) + 1
    if hi - lo == inside.size:
        return lo, hi, None
    return lo, hi, inside - lo


def _kernel_topk(query: np.ndarray, table: np.ndarray, k: int, exclude: np.ndarray,
                 candidates: np.ndarray | None, threads: int, isa: str | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    if isa is not None:
        return ext(isa).topk_s8(query, table, k, exclude, candidates, threads)
    return _numpy_topk(query, table, k, exclude, candidates)


def _numpy_topk(query: np.ndarray, table: np.ndarray, k: int, exclude: np.ndarray,
                candidates: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """What the kernel computes (best ``k`` rows by integer dot, ties to the smaller row), for
    hosts without the compiled kernels; chunked so the int32 copy stays small."""
    rows = np.arange(table.shape[0], dtype=np.int64) if candidates is None else candidates
    rows = rows[~np.isin(rows, exclude)]
    q = query.astype(np.int32)
    dots = np.concatenate([table[rows[i:i + 65536]].astype(np.int32) @ q
                           for i in range(0, rows.size, 65536)] or [np.zeros(0, np.int32)])
    order = np.lexsort((rows, -dots.astype(np.int64)))[:k]
    return rows[order], dots[order].astype(np.int32)
