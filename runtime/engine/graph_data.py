"""Reading a bundle's graph: in/out-neighbour CSR, features in the model's input dtype, types.

``graph/indptr.npy``/``graph/indices.npy`` are a CSR whose rows are destinations when the
manifest says ``graph.adjacency: "in"`` (what ``qgnn export`` writes: ``indices`` are the sources
of each node's in-edges) and sources otherwise (docs/bundle-format.md). The engine needs both
views: in-neighbours to aggregate, out-neighbours for a user's seen items and for the nodes an
update affects. A symmetric graph (every edge stored both ways, checked in O(E) with an
order-independent hash of the edge multiset) serves both from the same memory-mapped arrays; a
directed one is transposed once at load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qgnn.runtime.bundle.layout import (
    GRAPH_FEATURE_SCALE,
    GRAPH_FEATURE_ZERO_POINT,
    GRAPH_FEATURES,
    GRAPH_INDICES,
    GRAPH_INDPTR,
)
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.engine.store import FeatureCodec, edge_key
from qgnn.runtime.errors import BundleError

NODE_TYPE = "graph/node_type.npy"  # int8 (N,): 0 user, 1 item (bipartite link data)
_HASH_CHUNK = 1 << 22


@dataclass(frozen=True)
class GraphData:
    in_indptr: np.ndarray
    in_indices: np.ndarray
    out_indptr: np.ndarray
    out_indices: np.ndarray
    features: np.ndarray
    codec: FeatureCodec
    node_type: np.ndarray | None


def _owners(indptr: np.ndarray, start: int, stop: int, n: int) -> np.ndarray:
    """Row of each CSR position in [start, stop) (positions past indptr[-1] count as row n - 1).
    Two binary searches and a repeat over the rows the chunk spans, instead of one search per
    position: on a 1M-edge graph that search was half of a bundle's load time."""
    first = int(np.searchsorted(indptr, start, side="right")) - 1
    last = int(np.searchsorted(indptr, stop - 1, side="right")) - 1
    first, last = min(first, n - 1), min(last, n - 1)
    bounds = np.asarray(indptr[first + 1:last + 1], np.int64).clip(start, stop)
    edges = np.concatenate(([start], bounds, [stop]))
    return np.repeat(np.arange(first, last + 1, dtype=np.int64), np.diff(edges))


def _edge_hash(indptr: np.ndarray, cols: np.ndarray) -> tuple[int, int]:
    """Order-independent hashes of the edge multiset read as (row, col) and as (col, row)."""
    forward = backward = np.uint64(0)
    n = indptr.size - 1
    with np.errstate(over="ignore"):
        for start in range(0, cols.size, _HASH_CHUNK):
            stop = min(start + _HASH_CHUNK, cols.size)
            owner = _owners(indptr, start, stop, n)
            col = np.asarray(cols[start:stop], np.int64)
            forward += edge_key(12345, owner, col).sum(dtype=np.uint64)
            backward += edge_key(12345, col, owner).sum(dtype=np.uint64)
    return int(forward), int(backward)


def is_symmetric(indptr: np.ndarray, indices: np.ndarray) -> bool:
    """Whether the CSR graph holds every edge in both directions (as a multiset)."""
    forward, backward = _edge_hash(indptr, indices)
    return forward == backward


def transpose(indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR of the reversed edges (in-CSR from out-CSR and back)."""
    n = indptr.size - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    cols = np.asarray(indices, np.int64)
    order = np.argsort(cols, kind="stable")
    t_indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(cols, minlength=n), out=t_indptr[1:])
    return t_indptr, rows[order]


def _codec(bundle: Bundle, features: np.ndarray, want: np.dtype, input_scale: float | None,
           input_zero_point: int | None) -> tuple[np.ndarray, FeatureCodec]:
    """Features in the model's input dtype and the codec for new ones."""
    stored = np.dtype(features.dtype)
    if stored == np.uint8:
        if GRAPH_FEATURE_SCALE not in bundle.files or GRAPH_FEATURE_ZERO_POINT not in bundle.files:
            raise BundleError(GRAPH_FEATURES, f"uint8 features need {GRAPH_FEATURE_SCALE} and "
                                              f"{GRAPH_FEATURE_ZERO_POINT}")
        codec = FeatureCodec(np.dtype(np.uint8),
                             np.asarray(bundle.array(GRAPH_FEATURE_SCALE), np.float32),
                             np.asarray(bundle.array(GRAPH_FEATURE_ZERO_POINT), np.uint8))
        if want == np.float32:  # a float model over a bundle of quantised features
            return codec.decode(np.asarray(features)), FeatureCodec(np.dtype(np.float32))
        return features, codec
    if stored != np.float32:
        raise BundleError(GRAPH_FEATURES, f"features must be float32 or uint8, got {stored}")
    if want == np.float32:
        return features, FeatureCodec(np.dtype(np.float32))
    if input_scale is None or input_zero_point is None:
        raise BundleError(GRAPH_FEATURES, "the model takes uint8 features but the bundle holds "
                                          "float32 ones and no input scale/zero point")
    codec = FeatureCodec(np.dtype(np.uint8), np.asarray(input_scale, np.float32),
                         np.asarray(input_zero_point, np.uint8))
    return codec.encode(np.asarray(features)), codec


def load_graph(bundle: Bundle, feature_dtype: np.dtype, *, input_scale: float | None = None,
               input_zero_point: int | None = None) -> GraphData:
    """The bundle's graph as the engine serves it (arrays memory-mapped where possible)."""
    indptr = bundle.array(GRAPH_INDPTR)
    indices = bundle.array(GRAPH_INDICES)
    features = bundle.array(GRAPH_FEATURES)
    n = int(indptr.shape[0]) - 1
    if indptr.dtype != np.int64 or indptr.ndim != 1 or n < 0:
        raise BundleError(GRAPH_INDPTR, f"must be int64 (N + 1,), got {indptr.dtype} "
                                        f"{indptr.shape}")
    if indices.dtype not in (np.int64, np.int32) or indices.ndim != 1:
        raise BundleError(GRAPH_INDICES, f"must be int64 or int32 (E,), got {indices.dtype} "
                                         f"{indices.shape}")
    if int(indptr[0]) != 0 or int(indptr[-1]) != indices.shape[0] or (np.diff(indptr) < 0).any():
        raise BundleError(GRAPH_INDPTR, "is not a CSR pointer over graph/indices.npy")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise BundleError(GRAPH_INDICES, f"holds node ids outside [0, {n})")
    if features.ndim != 2 or features.shape[0] != n:
        raise BundleError(GRAPH_FEATURES, f"must be ({n}, F), got {features.shape}")
    layout = bundle.manifest.graph.adjacency
    if layout not in ("in", "out"):
        raise BundleError("manifest.json", f"graph.adjacency must be 'in' or 'out', got "
                                           f"{layout!r}")
    if is_symmetric(indptr, indices):
        in_ptr, in_idx, out_ptr, out_idx = indptr, indices, indptr, indices
    else:
        t_ptr, t_idx = transpose(indptr, indices)
        if layout == "in":
            in_ptr, in_idx, out_ptr, out_idx = indptr, indices, t_ptr, t_idx
        else:
            in_ptr, in_idx, out_ptr, out_idx = t_ptr, t_idx, indptr, indices
    features, codec = _codec(bundle, features, np.dtype(feature_dtype), input_scale,
                             input_zero_point)
    node_type = None
    if NODE_TYPE in bundle.files:
        node_type = np.asarray(bundle.array(NODE_TYPE))
        if node_type.shape != (n,) or node_type.dtype.kind not in "iu":
            raise BundleError(NODE_TYPE, f"must be ({n},) integers, got {node_type.dtype} "
                                         f"{node_type.shape}")
    return GraphData(in_ptr, in_idx, out_ptr, out_idx, features, codec, node_type)
