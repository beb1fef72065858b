"""Feature transforms applied once after loading; each returns a new Graph.

(Reverse edges: :meth:`Graph.to_undirected`.)
"""

from __future__ import annotations

import numpy as np
from qgnn.graph.container import Graph


def _features(graph: Graph, caller: str) -> np.ndarray:
    if graph.x is None:
        raise ValueError(f"{caller}: graph {graph.name!r} has no node features (x is None)")
    return graph.x


def row_normalize(graph: Graph) -> Graph:
    """Scale each feature row to sum 1 (the Planetoid/GCN preprocessing); zero rows stay zero.

    Rows are divided by their sum, so they are expected non-negative (bag-of-words counts).
    """
    x = _features(graph, "row_normalize")
    if (x < 0).any():
        row = int(np.flatnonzero((x < 0).any(axis=1))[0])
        raise ValueError(f"row_normalize: row {row} of x has negative values; row sums are "
                         f"not a meaningful scale")
    sums = x.sum(axis=1, keepdims=True)
    return graph.replace(x=(x / np.where(sums == 0, 1, sums)).astype(x.dtype, copy=False))


def standardize(graph: Graph, mask: np.ndarray | None = None) -> Graph:
    """Zero mean, unit variance per feature, with statistics from the ``mask`` rows only.

    ``mask`` defaults to ``graph.train_mask`` so validation/test features do not leak into the
    statistics; with ``(S, N)`` masks pick a split first (:meth:`Graph.with_split`) or pass one.
    Features constant on the mask rows are only centred. Without ``mask`` or masks on the graph,
    every node counts.
    """
    x = _features(graph, "standardize")
    if mask is None:
        mask = graph.train_mask
    if mask is None:
        rows = x
    else:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != (graph.num_nodes,):
            raise ValueError(f"standardize: mask must be bool ({graph.num_nodes},), got "
                             f"{mask.dtype} {mask.shape}; with several splits use with_split()")
        if not mask.any():
            raise ValueError("standardize: mask selects no nodes")
        rows = x[mask]
    mean = rows.mean(axis=0, dtype=np.float64)
    std = rows.std(axis=0, dtype=np.float64)
    scaled = (x - mean) / np.where(std == 0, 1.0, std)
    return graph.replace(x=scaled.astype(x.dtype, copy=False))
