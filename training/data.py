"""From the numpy :class:`Graph` to the torch tensors full-graph training reads.

Arrays that already have the right dtype and layout are shared with torch (``torch.from_numpy``),
not copied: a 1M-edge graph is converted once, in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import Block, full_graph_block


def as_tensor(array: np.ndarray, dtype: np.dtype | type) -> torch.Tensor:
    """``array`` as a torch tensor of ``dtype``, sharing memory when no conversion is needed.

    Read-only arrays (memory-mapped or loaded from ``.npz``) are copied once, since torch tensors
    are writable and sharing would let training write into them.
    """
    arr = np.ascontiguousarray(array, dtype=dtype)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


@dataclass(frozen=True, eq=False)
class NodeData:
    """One split of a node-classification graph on torch: ``N`` nodes, ``F`` features."""

    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64, -1 = unlabelled
    train_mask: torch.Tensor  # (N,) bool
    val_mask: torch.Tensor  # (N,) bool
    test_mask: torch.Tensor  # (N,) bool
    block: Block  # the whole graph, edges sorted by destination
    num_classes: int

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])


def node_data(graph: Graph, split: int = 0) -> NodeData:
    """Tensors for node classification on split ``split`` of ``graph``.

    Needs features ``x``, integer labels ``y`` and the three masks; every node in a mask must be
    labelled.
    """
    if graph.x is None:
        raise ValueError(f"graph {graph.name!r}: node classification needs features (Graph.x)")
    if graph.y is None or not np.issubdtype(graph.y.dtype, np.integer):
        raise ValueError(f"graph {graph.name!r}: node classification needs integer labels "
                         f"(Graph.y), got {None if graph.y is None else graph.y.dtype}")
    for name in ("train_mask", "val_mask", "test_mask"):
        if getattr(graph, name) is None:
            raise ValueError(f"graph {graph.name!r}: Graph.{name} is missing")
    num_splits = graph.num_splits
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split < num_splits:
        raise ValueError(f"split: graph {graph.name!r} has {num_splits} split(s), got {split!r}")
    g = graph.with_split(split)
    for name in ("train_mask", "val_mask", "test_mask"):
        mask = getattr(g, name)
        if not mask.any():
            raise ValueError(f"graph {graph.name!r}: Graph.{name} of split {split} is empty")
        if (g.y[mask] < 0).any():
            raise ValueError(f"graph {graph.name!r}: Graph.{name} of split {split} holds "
                             f"unlabelled nodes (y = -1)")
    return NodeData(x=as_tensor(g.x, np.float32), y=as_tensor(g.y, np.int64),
                    train_mask=as_tensor(g.train_mask, np.bool_),
                    val_mask=as_tensor(g.val_mask, np.bool_),
                    test_mask=as_tensor(g.test_mask, np.bool_), block=full_graph_block(g),
                    num_classes=g.num_classes)
