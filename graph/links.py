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

    def __post_init__(self) -> None:
        n = self.graph.num_nodes
        for name in ("train", "val", "test"):
            object.__setattr__(self, name, _pairs(name, getattr(self, name), n))
        if (self.num_users is None) != (self.num_items is None):
            raise ValueError("LinkData: give both num_users and num_items, or neither")
        if self.num_users is not None and self.num_users + self.num_items != n:
            raise ValueError(f"LinkData: num_users + num_items = "
                             f"{self.num_users + self.num_items} but the graph has {n} nodes")

    @property
    def bipartite(self) -> bool:
        return self.num_users is not None
