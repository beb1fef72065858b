"""The graph container every part of qgnn shares: numpy arrays, validated once, never torch.

Edges are stored in CSR by source (``indptr`` over sources, ``indices`` = destinations), sorted by
(source, destination). Message passing aggregates into destinations, so the in-neighbour view
(CSC: ``indptr`` over destinations, ``indices`` = sources) is derived once and cached; ``edge_ids``
maps each CSC slot back to its CSR edge so per-edge data (weights) is stored once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

SPLITS = ("train_mask", "val_mask", "test_mask")


@dataclass(frozen=True)
class Adjacency:
    """One direction of the adjacency: for row ``r``, ``indices[indptr[r]:indptr[r+1]]``."""

    indptr: np.ndarray  # (rows + 1,) int64
    indices: np.ndarray  # (E,) int64
    edge_ids: np.ndarray  # (E,) int64: position of each slot in the graph's CSR edge order

    def degree(self) -> np.ndarray:
        return np.diff(self.indptr)


def _as_ids(name: str, value: Any) -> np.ndarray:
    """Integer id arrays become int64; anything else is refused with the field named."""
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"Graph.{name}: expected integer ids, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"Graph.{name}: expected a 1-D array, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _check_range(name: str, ids: np.ndarray, upper: int) -> None:
    if ids.size == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= upper:
        bad = lo if lo < 0 else hi
        pos = int(np.flatnonzero(ids == bad)[0])
        raise ValueError(f"Graph.{name}: node id {bad} at position {pos} is out of range "
                         f"[0, {upper})")


def _check_finite(name: str, arr: np.ndarray, chunk_rows: int = 1 << 16) -> None:
    """Chunked so a 5 GB feature matrix needs no full-size boolean temporary."""
    if not np.issubdtype(arr.dtype, np.floating):
        return
    for start in range(0, max(len(arr), 1), chunk_rows):
        part = arr[start:start + chunk_rows]
        finite = np.isfinite(part)
        if not finite.all():
            pos = np.argwhere(~finite)[0]
            pos[0] += start
            raise ValueError(f"Graph.{name}: non-finite value {arr[tuple(pos)]} at index "
                             f"{tuple(int(p) for p in pos)}")


def csr_from_edges(src: np.ndarray, dst: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray,
                                                                             np.ndarray]:
    """Sort edges by (src, dst) and build CSR; returns (indptr, indices, order into the input)."""
    order = np.lexsort((dst, src)) if src.size else np.zeros(0, np.int64)
    counts = np.bincount(src, minlength=num_rows) if src.size else np.zeros(num_rows, np.int64)
    indptr = np.zeros(num_rows + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, dst[order].astype(np.int64, copy=False), order.astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class Graph:
    """A directed graph with node data. Undirected graphs store both directions.

    Masks are ``(N,)`` for one split or ``(S, N)`` for ``S`` fixed splits (pick one with
    :meth:`with_split`). ``y`` may hold ``-1`` for unlabelled nodes. ``node_type`` marks the sides
    of a bipartite graph (0 = user, 1 = item by convention).
    """

    num_nodes: int
    indptr: np.ndarray
    indices: np.ndarray
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    edge_weight: np.ndarray | None = None
    train_mask: np.ndarray | None = None
    val_mask: np.ndarray | None = None
    test_mask: np.ndarray | None = None
    node_type: np.ndarray | None = None
    name: str = "graph"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.num_nodes
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"Graph.num_nodes: expected a non-negative int, got {n!r}")
        object.__setattr__(self, "num_nodes", int(n))
        indptr = _as_ids("indptr", self.indptr)
        indices = _as_ids("indices", self.indices)
        if indptr.shape != (n + 1,):
            raise ValueError(f"Graph.indptr: expected shape ({n + 1},), got {indptr.shape}")
        if indptr[0] != 0 or indptr[-1] != indices.size:
            raise ValueError(f"Graph.indptr: must start at 0 and end at len(indices)="
                             f"{indices.size}, got {int(indptr[0])}..{int(indptr[-1])}")
        steps = np.diff(indptr)
        if (steps < 0).any():
            row = int(np.flatnonzero(steps < 0)[0])
            raise ValueError(f"Graph.indptr: decreases at row {row} ({int(indptr[row])} -> "
                             f"{int(indptr[row + 1])})")
        _check_range("indices", indices, n)
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        self._validate_node_data()

    def _validate_node_data(self) -> None:
        n = self.num_nodes
        if self.x is not None:
            x = np.asarray(self.x)
            if x.ndim != 2 or x.shape[0] != n:
                raise ValueError(f"Graph.x: expected shape ({n}, F), got {x.shape}")
            if not np.issubdtype(x.dtype, np.floating):
                raise ValueError(f"Graph.x: expected floating features, got dtype {x.dtype}")
            _check_finite("x", x)
            object.__setattr__(self, "x", x)
        if self.y is not None:
            y = np.asarray(self.y)
            if y.shape[:1] != (n,):
                raise ValueError(f"Graph.y: expected {n} labels, got shape {y.shape}")
            if np.issubdtype(y.dtype, np.integer):
                y = y.astype(np.int64, copy=False)
                if y.size and int(y.min()) < -1:
                    raise ValueError(f"Graph.y: labels must be >= 0 (or -1 for none), got "
                                     f"{int(y.min())}")
            elif np.issubdtype(y.dtype, np.floating):
                _check_finite("y", y)
            else:
                raise ValueError(f"Graph.y: expected integer or float labels, got {y.dtype}")
            object.__setattr__(self, "y", y)
        if self.edge_weight is not None:
            w = np.asarray(self.edge_weight)
            if w.shape != (self.num_edges,):
                raise ValueError(f"Graph.edge_weight: expected shape ({self.num_edges},), got "
                                 f"{w.shape}")
            if not np.issubdtype(w.dtype, np.floating):
                raise ValueError(f"Graph.edge_weight: expected floats, got dtype {w.dtype}")
            _check_finite("edge_weight", w)
            object.__setattr__(self, "edge_weight", w)
        for name in SPLITS:
            m = getattr(self, name)
            if m is None:
                continue
            m = np.asarray(m)
            if m.dtype != np.bool_:
                raise ValueError(f"Graph.{name}: expected a bool mask, got dtype {m.dtype}")
            if m.ndim not in (1, 2) or m.shape[-1] != n:
                raise ValueError(f"Graph.{name}: expected shape ({n},) or (S, {n}), got {m.shape}")
            object.__setattr__(self, name, m)
        if self.node_type is not None:
            t = np.asarray(self.node_type)
            if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
                raise ValueError(f"Graph.node_type: expected ({n},) integers, got {t.shape} "
                                 f"{t.dtype}")
            object.__setattr__(self, "node_type", t.astype(np.int8, copy=False))

    @classmethod
    def from_edges(cls, src: Any, dst: Any, num_nodes: int, *, edge_weight: Any = None,
                   **node_data: Any) -> Graph:
        """Build from COO edge lists (any order); edges are sorted, duplicates kept."""
        src, dst = _as_ids("src", src), _as_ids("dst", dst)
        if src.shape != dst.shape:
            raise ValueError(f"Graph.from_edges: src has {src.size} ids but dst has {dst.size}")
        _check_range("src", src, num_nodes)
        _check_range("dst", dst, num_nodes)
        indptr, indices, order = csr_from_edges(src, dst, num_nodes)
        if edge_weight is not None:
            edge_weight = np.asarray(edge_weight)
            if edge_weight.shape != src.shape:
                raise ValueError(f"Graph.edge_weight: expected shape {src.shape}, got "
                                 f"{edge_weight.shape}")
            edge_weight = edge_weight[order]
        return cls(num_nodes=num_nodes, indptr=indptr, indices=indices, edge_weight=edge_weight,
                   **node_data)

    @property
    def num_edges(self) -> int:
        return int(self.indices.size)

    @property
    def num_features(self) -> int:
        return 0 if self.x is None else int(self.x.shape[1])

    @property
    def num_classes(self) -> int:
        if self.y is None or not np.issubdtype(self.y.dtype, np.integer) or self.y.size == 0:
            return 0
        return int(self.y.max()) + 1

    @property
    def num_splits(self) -> int:
        m = self.train_mask
        return 0 if m is None else (1 if m.ndim == 1 else int(m.shape[0]))

    def edge_index(self) -> tuple[np.ndarray, np.ndarray]:
        """COO ``(src, dst)`` in CSR order, aligned with ``edge_weight``."""
        src = np.repeat(np.arange(self.num_nodes, dtype=np.int64), np.diff(self.indptr))
        return src, self.indices

    @cached_property
    def csr(self) -> Adjacency:
        """Out-neighbours: row = source."""
        return Adjacency(self.indptr, self.indices, np.arange(self.num_edges, dtype=np.int64))

    @cached_property
    def csc(self) -> Adjacency:
        """In-neighbours: row = destination, indices = sources (what aggregation reads)."""
        # The CSR is sorted by (src, dst), so a stable sort by dst yields (dst, src) order.
        order = np.argsort(self.indices, kind="stable")
        counts = np.bincount(self.indices, minlength=self.num_nodes)
        indptr = np.zeros(self.num_nodes + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        src = np.repeat(np.arange(self.num_nodes, dtype=np.int64), np.diff(self.indptr))
        return Adjacency(indptr, src[order], order.astype(np.int64, copy=False))

    def in_degree(self) -> np.ndarray:
        return np.bincount(self.indices, minlength=self.num_nodes).astype(np.int64)

    def out_degree(self) -> np.ndarray:
        return np.diff(self.indptr)

    def replace(self, **changes: Any) -> Graph:
        """A new validated graph with some fields changed (the container is immutable)."""
        return dataclasses.replace(self, **changes)

    def with_split(self, index: int) -> Graph:
        """Select one of ``S`` fixed splits so every mask is ``(N,)``."""
        if self.num_splits <= 1 and (self.train_mask is None or self.train_mask.ndim == 1):
            if index != 0:
                raise ValueError(f"Graph.with_split: graph has one split, got index {index}")
            return self
        if not 0 <= index < self.num_splits:
            raise ValueError(f"Graph.with_split: split {index} not in [0, {self.num_splits})")
        return self.replace(**{k: getattr(self, k)[index] for k in SPLITS
                               if getattr(self, k) is not None})

    def is_symmetric(self) -> bool:
        """True when every edge (u, v) has its reverse (v, u) with the same multiplicity."""
        src, dst = self.edge_index()
        fwd = np.sort(src * self.num_nodes + dst)
        bwd = np.sort(dst * self.num_nodes + src)
        return bool(np.array_equal(fwd, bwd))

    def to_undirected(self) -> Graph:
        """Add missing reverse edges and drop duplicates (edge weights of duplicates: the first)."""
        src, dst = self.edge_index()
        both_src = np.concatenate([src, dst])
        both_dst = np.concatenate([dst, src])
        w = None if self.edge_weight is None else np.concatenate([self.edge_weight] * 2)
        key = both_src * self.num_nodes + both_dst
        _, first = np.unique(key, return_index=True)
        g = Graph.from_edges(both_src[first], both_dst[first], self.num_nodes,
                             edge_weight=None if w is None else w[first])
        return self.replace(indptr=g.indptr, indices=g.indices, edge_weight=g.edge_weight)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "num_nodes": self.num_nodes, "num_edges": self.num_edges,
                "num_features": self.num_features, "num_classes": self.num_classes,
                "num_splits": self.num_splits}
