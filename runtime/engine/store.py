"""The serving graph store: in-neighbour CSR (memory-mapped base + in-memory delta), snapshots.

Readers take the current :class:`Snapshot` (an immutable object, swapped atomically) and never
lock; writers (:meth:`GraphStore.add`) serialise on a lock, build the next snapshot from the
current one and swap it in, so a request runs on one consistent graph from start to end and a
graph update never disturbs requests in flight (copy-on-write).

The base graph is the bundle's arrays, memory-mapped read-only: it costs page cache, not heap.
Updates go to the delta: rows of new nodes' features, and for every node whose in-neighbour
list changed ("dirty" nodes: targets of new edges, and new nodes) its complete list, base plus
new edges. An update rebuilds only the delta, so its cost grows with the delta, not the graph.

Capped neighbourhoods (the fanout rule, docs/engine.md): node ``v`` keeps the ``cap``
in-neighbours ``u`` with the smallest ``edge_key(seed, u, v)`` (a splitmix64 hash), i.e. a
uniform sample without replacement that depends on nothing but the edge set and the seed: not
on the request, the batch, the hop or the order of edges. The rows that can be capped are kept
sorted by key (``head`` for base nodes, every dirty row), so a capped lookup is a slice.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from qgnn.runtime.errors import InvalidRequestError

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def edge_key(seed: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(E,) uint64 pseudo-random key of each edge (src -> dst): splitmix64 (Steele, Lea & Flood,
    OOPSLA 2014) of a mix of the seed and both endpoints."""
    with np.errstate(over="ignore"):
        z = (src.astype(np.uint64) * _GOLDEN) ^ (dst.astype(np.uint64) + np.uint64(seed) * _MIX2)
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def segment_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat positions ``starts[i] + 0 .. lengths[i] - 1`` for every i, concatenated."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    out = np.arange(total, dtype=np.int64)
    out += np.repeat(starts - (ends - lengths), lengths)
    return out


def _rows_by_key(owner: np.ndarray, src: np.ndarray, dst: np.ndarray, seed: int) -> np.ndarray:
    """Order of edges grouped by ``owner`` (non-decreasing) with keys ascending in each group."""
    composite = (owner.astype(np.uint64) << np.uint64(32)) | (
        edge_key(seed, src, dst) >> np.uint64(32))
    return np.argsort(composite, kind="stable")


@dataclass(frozen=True)
class FeatureCodec:
    """How the store keeps node features: float32, or uint8 with the bundle's ``scale`` and
    ``zero_point`` (scalars or per feature): ``q = clamp(rint(x / scale) + zp, 0, 255)``."""

    dtype: np.dtype
    scale: np.ndarray | None = None  # float32 () or (F,)
    zero_point: np.ndarray | None = None  # uint8 () or (F,)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Float32 features (m, F) in the store's dtype (the contract's quantisation)."""
        x = np.asarray(x, np.float32)
        if self.dtype == np.float32:
            return np.ascontiguousarray(x)
        q = np.rint(x / self.scale) + self.zero_point.astype(np.float32)
        return np.clip(q, 0, 255).astype(np.uint8)

    def decode(self, q: np.ndarray) -> np.ndarray:
        if self.dtype == np.float32:
            return np.asarray(q, np.float32)
        return ((q.astype(np.float32) - self.zero_point.astype(np.float32))
                * self.scale).astype(np.float32)


@dataclass(frozen=True)
class Snapshot:
    """One immutable version of the served graph (see the module docstring)."""

    revision: int
    num_nodes: int
    num_edges: int
    num_base: int
    base_indptr: np.ndarray  # (num_base + 1,) int64, in-neighbour CSR
    base_indices: np.ndarray  # (E0,) source of each in-edge
    base_degree: np.ndarray  # (num_base,) int64
    head_row: np.ndarray  # (num_base,) int64 row in head, -1 when deg <= min cap
    head_indptr: np.ndarray  # rows: the min(deg, max cap) smallest-key in-neighbours
    head_indices: np.ndarray
    head_low: int  # the head serves caps in [head_low, head_high]
    head_high: int
    seed: int
    dirty_ids: np.ndarray  # (D,) sorted node ids whose lists live in the delta
    dirty_indptr: np.ndarray  # (D + 1,)
    dirty_indices: np.ndarray  # complete in-neighbour lists, sorted by key within a row
    base_features: np.ndarray  # (num_base, F)
    new_features: np.ndarray  # (num_nodes - num_base, F)
    out_indptr: np.ndarray  # (num_base + 1,) int64, out-neighbour CSR of the base graph
    out_indices: np.ndarray  # (E0,) destination of each out-edge
    new_edges: np.ndarray  # (k, 2) int64 (src, dst) rows added since the base

    @property
    def num_features(self) -> int:
        return int(self.base_features.shape[1])

    def _dirty_rows(self, nodes: np.ndarray) -> np.ndarray:
        """Row of each node in the delta, -1 where the node is not dirty."""
        if not self.dirty_ids.size:
            return np.full(nodes.size, -1, np.int64)
        pos = np.searchsorted(self.dirty_ids, nodes)
        pos = np.minimum(pos, self.dirty_ids.size - 1)
        return np.where(self.dirty_ids[pos] == nodes, pos, -1)

    def in_degree(self, nodes: np.ndarray) -> np.ndarray:
        """(n,) int64 in-degree of each node in the current graph."""
        deg = np.zeros(nodes.size, np.int64)
        base = nodes < self.num_base
        deg[base] = self.base_degree[nodes[base]]
        rows = self._dirty_rows(nodes)
        dirty = rows >= 0
        if dirty.any():
            deg[dirty] = np.diff(self.dirty_indptr)[rows[dirty]]
        return deg

    def in_neighbours(self, nodes: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
        """``(counts (n,), sources (sum counts,))``: each node's in-neighbours, grouped by node
        in ``nodes`` order; at most ``cap`` per node (the smallest-key ones), all when ``cap``
        is -1. Vectorised: three gathers (plain base rows, capped base rows, delta rows)."""
        if not self.dirty_ids.size and (not nodes.size or nodes.max() < self.num_base):
            return self._base_neighbours(nodes, cap)  # the common case, in fewer steps
        n = nodes.size
        rows = self._dirty_rows(nodes)
        dirty = rows >= 0
        base = ~dirty & (nodes < self.num_base)
        deg = np.zeros(n, np.int64)
        deg[base] = self.base_degree[nodes[base]]
        dirty_ptr = self.dirty_indptr
        if dirty.any():
            deg[dirty] = dirty_ptr[rows[dirty] + 1] - dirty_ptr[rows[dirty]]
        take = deg if cap < 0 else np.minimum(deg, cap)
        out_start = np.cumsum(take) - take
        out = np.empty(int(take.sum()), np.int64)
        if base.any():
            capped = base & (take < deg)
            plain = base & ~capped
            if plain.any():
                self._copy(out, out_start[plain], take[plain],
                           self.base_indptr[nodes[plain]], self.base_indices)
            if capped.any():
                self._capped(out, out_start[capped], nodes[capped], cap)
        if dirty.any():
            self._copy(out, out_start[dirty], take[dirty], dirty_ptr[rows[dirty]],
                       self.dirty_indices)
        return take, out

    def _base_neighbours(self, nodes: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`in_neighbours` of base nodes of a snapshot without a delta."""
        start = self.base_indptr.take(nodes)
        deg = self.base_indptr.take(nodes + 1) - start
        if cap < 0 or not deg.size or deg.max() <= cap:
            return deg, self.base_indices.take(segment_positions(start, deg)).astype(
                np.int64, copy=False)
        take = np.minimum(deg, cap)
        out_start = np.cumsum(take) - take
        out = np.empty(int(out_start[-1] + take[-1]), np.int64)
        capped = take < deg
        plain = ~capped
        if plain.any():
            self._copy(out, out_start[plain], take[plain], start[plain], self.base_indices)
        if capped.any():
            self._capped(out, out_start[capped], nodes[capped], cap)
        return take, out

    def _capped(self, out: np.ndarray, out_start: np.ndarray, nodes: np.ndarray,
                cap: int) -> None:
        """Writes the ``cap`` smallest-key in-neighbours of base ``nodes`` (each of degree >
        ``cap``): slices of the head when it covers ``cap``, else computed from the rows."""
        lengths = np.full(nodes.size, cap, np.int64)
        if self.head_low <= cap <= self.head_high:
            self._copy(out, out_start, lengths, self.head_indptr.take(self.head_row.take(nodes)),
                       self.head_indices)
            return
        out[segment_positions(out_start, lengths)] = smallest_keys(
            self.base_indptr, self.base_indices, nodes, lengths, self.seed)

    @staticmethod
    def _copy(out: np.ndarray, out_start: np.ndarray, lengths: np.ndarray,
              src_start: np.ndarray, source: np.ndarray) -> None:
        if lengths.size == 1:  # the common single-row case without index arithmetic
            s, o, k = int(src_start[0]), int(out_start[0]), int(lengths[0])
            out[o:o + k] = source[s:s + k]
            return
        out[segment_positions(out_start, lengths)] = source.take(
            segment_positions(src_start, lengths))

    def out_neighbours(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(owner, destinations)``: every out-edge of ``nodes`` as (index into ``nodes``,
        destination id), base edges first, then added ones."""
        base = np.flatnonzero(nodes < self.num_base)
        starts = self.out_indptr[nodes[base]]
        counts = self.out_indptr[nodes[base] + 1] - starts
        owner = np.repeat(base, counts)
        dsts = np.asarray(self.out_indices).take(segment_positions(starts, counts)).astype(
            np.int64, copy=False)
        if self.new_edges.shape[0]:
            order = np.argsort(nodes, kind="stable")
            sorted_nodes = nodes[order]
            at = np.minimum(np.searchsorted(sorted_nodes, self.new_edges[:, 0]), nodes.size - 1)
            hit = sorted_nodes[at] == self.new_edges[:, 0]
            owner = np.concatenate([owner, order[at[hit]]])
            dsts = np.concatenate([dsts, self.new_edges[hit, 1]])
        return owner, dsts

    def features(self, nodes: np.ndarray) -> np.ndarray:
        """(n, F) stored features (the store's dtype) of existing nodes."""
        if not self.new_features.shape[0] or (nodes.size and nodes.max() < self.num_base):
            return self.base_features.take(nodes, axis=0)
        out = np.empty((nodes.size, self.num_features), self.base_features.dtype)
        base = nodes < self.num_base
        out[base] = self.base_features.take(nodes[base], axis=0)
        out[~base] = self.new_features.take(nodes[~base] - self.num_base, axis=0)
        return out


def smallest_keys(indptr: np.ndarray, indices: np.ndarray, nodes: np.ndarray,
                  keep: np.ndarray, seed: int) -> np.ndarray:
    """For each base node (in order), its ``keep`` in-neighbours with the smallest keys, sorted
    by key, concatenated: the capped rule applied to whole rows."""
    degree = indptr.take(nodes + 1) - indptr.take(nodes)
    slots = segment_positions(indptr.take(nodes), degree)
    owner = np.repeat(np.arange(nodes.size, dtype=np.int64), degree)
    src = indices.take(slots).astype(np.int64, copy=False)
    order = _rows_by_key(owner, src, nodes[owner], seed)
    rank = np.arange(order.size, dtype=np.int64) - np.repeat(np.cumsum(degree) - degree, degree)
    return src[order[rank < np.repeat(keep, degree)]]


def _head(indptr: np.ndarray, indices: np.ndarray, degree: np.ndarray, caps: Sequence[int],
          seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``(head_row, head_indptr, head_indices, low, high)``: the key-sorted first ``high =
    max(caps)`` in-neighbours of every base node of degree above ``low = min(caps)``, the only
    rows a lookup capped within ``[low, high]`` reads outside the base arrays."""
    n = degree.size
    head_row = np.full(n, -1, np.int64)
    finite = [c for c in caps if c >= 0]
    if not finite:
        return head_row, np.zeros(1, np.int64), np.zeros(0, np.int64), 0, -1
    low, high = min(finite), max(finite)
    big = np.flatnonzero(degree > low)
    head_row[big] = np.arange(big.size)
    keep = np.minimum(degree[big], high)
    head_indptr = np.zeros(big.size + 1, np.int64)
    np.cumsum(keep, out=head_indptr[1:])
    return head_row, head_indptr, smallest_keys(indptr, indices, big, keep, seed), low, high


def check_edges(edges: np.ndarray | None, num_nodes: int, field: str = "edges") -> np.ndarray:
    """``edges`` as int64 (e, 2) rows (src, dst) of ids < ``num_nodes``, or InvalidRequestError
    naming the first bad entry."""
    if edges is None:
        return np.zeros((0, 2), np.int64)
    arr = np.asarray(edges)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "iu":
        raise InvalidRequestError(field, f"{arr.dtype} {list(arr.shape)}",
                                  "edges must be an integer (e, 2) array of (src, dst) rows")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= num_nodes)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InvalidRequestError(f"{field}[{i}][{j}]", int(arr[i, j]),
                                  f"not a node id (0..{num_nodes - 1})")
    return arr


def extend(old: Snapshot, rows: np.ndarray, edges: np.ndarray, seed: int) -> Snapshot:
    """A new snapshot: ``old`` plus nodes with stored ``rows`` (m, F) and ``edges`` (e, 2) int64,
    already checked against ``old.num_nodes + m``. ``old`` is left as it is (copy-on-write:
    the delta is rebuilt, the base shared)."""
    total = old.num_nodes + int(rows.shape[0])
    new_nodes = np.arange(old.num_nodes, total, dtype=np.int64)
    touched = np.unique(np.concatenate([edges[:, 1], new_nodes]))
    dirty_ids, dirty_indptr, dirty_indices = old.dirty_ids, old.dirty_indptr, old.dirty_indices
    if touched.size:
        dirty_ids = np.union1d(old.dirty_ids, touched)
        counts, srcs = old.in_neighbours(dirty_ids, -1)  # current lists; new nodes: empty
        owner = np.concatenate([np.repeat(np.arange(dirty_ids.size, dtype=np.int64), counts),
                                np.searchsorted(dirty_ids, edges[:, 1])])
        srcs = np.concatenate([srcs, edges[:, 0]])
        dirty_indices = srcs[_rows_by_key(owner, srcs, dirty_ids[owner], seed)]
        dirty_indptr = np.zeros(dirty_ids.size + 1, np.int64)
        np.cumsum(np.bincount(owner, minlength=dirty_ids.size), out=dirty_indptr[1:])
    return replace(old, revision=old.revision + 1, num_nodes=total,
                   num_edges=old.num_edges + int(edges.shape[0]), dirty_ids=dirty_ids,
                   dirty_indptr=dirty_indptr, dirty_indices=dirty_indices,
                   new_features=np.concatenate([old.new_features, rows]),
                   new_edges=np.concatenate([old.new_edges, edges]))


class GraphStore:
    """The graph a model serves, updated at run time (see the module docstring).

    ``in_indptr``/``in_indices``: in-neighbour CSR of the base graph (``in_indices[
    in_indptr[v]:in_indptr[v + 1]]`` are the sources of v's in-edges); ``out_indptr``/
    ``out_indices`` the out-neighbour CSR (the same arrays for a symmetric graph);
    ``features`` (N, F) in the codec's dtype. Arrays may be read-only memory maps; they are
    never written.
    """

    def __init__(self, in_indptr: np.ndarray, in_indices: np.ndarray, out_indptr: np.ndarray,
                 out_indices: np.ndarray, features: np.ndarray, codec: FeatureCodec, *,
                 caps: Sequence[int] = (), seed: int = 0) -> None:
        # plain ndarray views of the (possibly memory-mapped) arrays: slicing a np.memmap builds
        # a memmap object each time, a cost a sub-millisecond request notices
        in_indptr, in_indices, out_indptr, out_indices, features = (
            np.asarray(a) for a in (in_indptr, in_indices, out_indptr, out_indices, features))
        n = int(in_indptr.shape[0]) - 1
        if features.shape[0] != n:
            raise ValueError(f"GraphStore: features have {features.shape[0]} rows but the graph "
                             f"has {n} nodes")
        self.codec = codec
        self.caps = tuple(int(c) for c in caps)
        self.seed = int(seed)
        degree = np.diff(in_indptr)
        head_row, head_indptr, head_indices, low, high = _head(in_indptr, in_indices, degree,
                                                               self.caps, self.seed)
        self._lock = threading.Lock()
        self._snapshot = Snapshot(
            revision=0, num_nodes=n, num_edges=int(in_indices.shape[0]), num_base=n,
            base_indptr=in_indptr, base_indices=in_indices, base_degree=degree,
            head_row=head_row, head_indptr=head_indptr, head_indices=head_indices,
            head_low=low, head_high=high, seed=self.seed,
            dirty_ids=np.zeros(0, np.int64), dirty_indptr=np.zeros(1, np.int64),
            dirty_indices=np.zeros(0, np.int64), base_features=features,
            new_features=np.zeros((0, features.shape[1]), features.dtype),
            out_indptr=out_indptr, out_indices=out_indices,
            new_edges=np.zeros((0, 2), np.int64))

    def snapshot(self) -> Snapshot:
        """The current graph (an atomic read; the object never changes)."""
        return self._snapshot

    def encode(self, features: np.ndarray | None, num_features: int,
               field: str = "features") -> np.ndarray:
        """Float32 features (m, F) in the store's dtype, or InvalidRequestError."""
        if features is None:
            return np.zeros((0, num_features), self.codec.dtype)
        feats = np.asarray(features)
        if feats.ndim != 2 or feats.shape[1] != num_features:
            raise InvalidRequestError(field, list(feats.shape),
                                      f"node features must be (m, {num_features})")
        if feats.dtype.kind != "f" or not np.isfinite(feats).all():
            raise InvalidRequestError(field, str(feats.dtype),
                                      "node features must be finite floats")
        return self.codec.encode(feats)

    def overlay(self, snapshot: Snapshot, features: np.ndarray | None,
                edges: np.ndarray | None) -> Snapshot:
        """``snapshot`` plus nodes and edges, for one request only (the store is untouched)."""
        rows = self.encode(features, snapshot.num_features)
        checked = check_edges(edges, snapshot.num_nodes + rows.shape[0])
        return extend(snapshot, rows, checked, self.seed)

    def publish(self, new: Snapshot, expected: Snapshot) -> None:
        """Makes ``new`` (built from ``expected`` with :meth:`overlay`) the current graph;
        refuses when another update came in between."""
        with self._lock:
            if self._snapshot is not expected:
                raise RuntimeError("GraphStore.publish: the graph changed since the update was "
                                   "prepared; serialise updates")
            self._snapshot = new

    def add(self, features: np.ndarray | None, edges: np.ndarray | None) -> np.ndarray:
        """Appends nodes (float32 features (m, F), encoded by the codec) and directed edges
        ``(e, 2)`` rows (src, dst), which may use the new ids; returns the new ids. All or
        nothing: invalid input raises InvalidRequestError and changes nothing."""
        with self._lock:
            old = self._snapshot
            self._snapshot = self.overlay(old, features, edges)
            return np.arange(old.num_nodes, self._snapshot.num_nodes, dtype=np.int64)
