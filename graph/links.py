"""Link-prediction data: a message-passing graph plus held-out positive pairs.

The graph that messages flow over holds only training edges (both directions), so validation and
test pairs are never visible to the encoder. For bipartite user-item data, users are nodes
``0..num_users-1`` and items ``num_users..num_users+num_items-1`` (``graph.node_type`` 0 / 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qgnn.graph.container import Graph


def _pairs(name: str, value: Any, num_nodes: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"LinkData.{name}: expected (M, 2) integer pairs, got shape {arr.shape} "
                         f"dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= num_nodes):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ValueError(f"LinkData.{name}: node id {bad} out of range [0, {num_nodes})")
    return arr


@dataclass(frozen=True, eq=False)
class LinkData:
    graph: Graph  # training edges only
    train: np.ndarray  # (M, 2) positive (src, dst) pairs used as supervision
    val: np.ndarray  # (K, 2)
    test: np.ndarray  # (T, 2)
    num_users: int | None = None  # bipartite only
    num_items: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # fixed evaluation negatives (OGB's); None: training draws them
    val_neg: np.ndarray | None = None
    test_neg: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.graph.num_nodes
        for name in ("train", "val", "test"):
            object.__setattr__(self, name, _pairs(name, getattr(self, name), n))
        if (self.val_neg is None) != (self.test_neg is None):
            raise ValueError("LinkData: give both val_neg and test_neg, or neither")
        for name in ("val_neg", "test_neg"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _pairs(name, getattr(self, name), n))
        if (self.num_users is None) != (self.num_items is None):
            raise ValueError("LinkData: give both num_users and num_items, or neither")
        if self.num_users is not None and self.num_users + self.num_items != n:
            raise ValueError(f"LinkData: num_users + num_items = "
                             f"{self.num_users + self.num_items} but the graph has {n} nodes")

    @property
    def bipartite(self) -> bool:
        return self.num_users is not None


def split_edges(graph: Graph, *, val_fraction: float = 0.05, test_fraction: float = 0.1,
                seed: int = 0) -> LinkData:
    """Hold out random undirected pairs of a (non-bipartite) graph for link prediction.

    Each distinct pair ``{u, v}`` (``u != v``) is one candidate; the held-out ones lose *both*
    directions in the returned graph, which keeps every node's data and the remaining edges'
    weights. Self-loops stay in the graph and are never held out. Pairs come back as ``(min, max)``
    rows; ``train`` lists every pair left in the graph. The same ``seed`` gives the same split.
    """
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"split_edges: {name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"split_edges: val_fraction + test_fraction = "
                         f"{val_fraction + test_fraction} leaves no training pairs")
    if graph.node_type is not None and np.unique(graph.node_type).size > 1:
        raise ValueError("split_edges: graph has several node types; bipartite user-item data "
                         "is split by time with qgnn.graph.io.interactions.load_interactions")
    n = graph.num_nodes
    src, dst = graph.edge_index()
    key = np.minimum(src, dst) * n + np.maximum(src, dst)  # one id per undirected pair
    pairs = np.unique(key[src != dst])
    shuffled = pairs[np.random.default_rng(seed).permutation(pairs.size)]
    num_test = round(pairs.size * test_fraction)
    num_val = round(pairs.size * val_fraction)
    test, val = shuffled[:num_test], shuffled[num_test:num_test + num_val]
    held_out = shuffled[:num_test + num_val]
    keep = ~np.isin(key, held_out)  # CSR order is kept, so rows stay sorted
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src[keep], minlength=n), out=indptr[1:])
    kept = graph.replace(indptr=indptr, indices=dst[keep],
                         edge_weight=None if graph.edge_weight is None else graph.edge_weight[keep])
    train = np.setdiff1d(pairs, held_out, assume_unique=True)
    width = max(n, 1)
    train, val, test = (np.stack([k // width, k % width], axis=1)
                        for k in (train, np.sort(val), np.sort(test)))
    return LinkData(kept, train, val, test, meta={"split": "random_pairs", "seed": seed})
