"""The recommender files of a bundle (docs/bundle-format.md, "Recommender data"): node types,
the dataset's own user and item ids, the serving-only seen interactions and the ratings.

Bipartite link data numbers users ``0..U-1`` and items ``U..U+I-1``. The engine recommends only
items, to users, and speaks the dataset's ids through these files; exclude-seen also drops the
validation and test interactions, which the model never saw as edges.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qgnn.graph.container import Graph
from qgnn.graph.links import LinkData
from qgnn.graph.ranking import seen_csr

NODE_TYPE = "graph/node_type.npy"
EXTERNAL_IDS = "graph/external_ids_{kind}.npy"
SEEN_INDPTR = "graph/seen_indptr.npy"
SEEN_INDICES = "graph/seen_indices.npy"
EDGE_WEIGHT = "graph/edge_weight.npy"


def external_ids(ids: np.ndarray) -> np.ndarray:
    """The dataset's ids as a numpy unicode array (integers written as their decimal text)."""
    return np.asarray([str(x) for x in np.asarray(ids).tolist()], dtype=str)


def recommender_files(data: LinkData, graph: Graph) -> dict[str, np.ndarray]:
    """The bundle files of bipartite ``data`` served over ``graph`` (its message-passing graph,
    whose CSC order ``graph/indices.npy`` follows)."""
    files: dict[str, np.ndarray] = {}
    if graph.edge_weight is not None:
        files[EDGE_WEIGHT] = np.ascontiguousarray(graph.edge_weight[graph.csc.edge_ids],
                                                  np.float32)
    if not data.bipartite:
        return files
    num_users = int(data.num_users)  # type: ignore[arg-type]
    node_type = np.repeat(np.array([0, 1], np.int8), [num_users, data.num_items])
    files[NODE_TYPE] = node_type
    for kind in ("user", "item"):
        ids = data.meta.get(f"{kind}_ids")
        if ids is None:  # synthetic data: its node numbering is its id
            count = num_users if kind == "user" else int(data.num_items)  # type: ignore[arg-type]
            ids = np.arange(count)
        files[EXTERNAL_IDS.format(kind=kind)] = external_ids(ids)
    held = np.concatenate([data.val, data.test]).reshape(-1, 2)
    indptr, indices = seen_csr(held, num_users, 0)
    files[SEEN_INDPTR], files[SEEN_INDICES] = indptr, indices
    return files


def node_types_manifest(data: LinkData | None) -> dict[str, Any] | None:
    """``{"user": U, "item": I}`` for bipartite data, else None."""
    if data is None or not data.bipartite:
        return None
    return {"user": int(data.num_users), "item": int(data.num_items)}  # type: ignore[arg-type]
