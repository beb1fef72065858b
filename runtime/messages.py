"""What the data plane takes and returns, free of any protocol: model selectors, limits and
the answers (the gRPC front ends translate these to and from their messages).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qgnn.runtime.backend import ModelBackend


@dataclass(frozen=True)
class InductiveSpec:
    """One inductive node as a request carries it, before validation."""

    id: int
    features: np.ndarray
    neighbors: np.ndarray
    in_neighbors: np.ndarray


@dataclass(frozen=True)
class ModelSelector:
    """Which model a call addresses: a name and an explicit version, or None for the newest."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name} v{self.version}"


@dataclass(frozen=True)
class ModelKey:
    """The model version that answered."""

    name: str
    version: int


@dataclass(frozen=True)
class GraphSummary:
    num_nodes: int
    num_edges: int
    num_features: int
    num_classes: int
    revision: int


@dataclass(frozen=True)
class NodePredictions:
    model: ModelKey
    probabilities: np.ndarray  # float32 (n, C)
    predicted_class: np.ndarray  # int64 (n,), argmax, lowest index on ties


@dataclass(frozen=True)
class LinkScores:
    model: ModelKey
    scores: np.ndarray  # float32 (n,)


@dataclass(frozen=True)
class Recommendations:
    model: ModelKey
    item_ids: np.ndarray  # int64 (<= k,)
    scores: np.ndarray  # float32 (<= k,)
    item_external_ids: list[str] | None = None  # the dataset's ids, when the bundle has them


@dataclass(frozen=True)
class RecommendUser:
    """Who a Recommend call is for, beyond a node id: the dataset's own user id, or a
    cold-start user given by its items (node ids and/or dataset ids), plus candidates by
    dataset id. Resolved against the backend's ``catalogue`` (qgnn.runtime.catalogue)."""

    external_id: str | None = None
    candidate_external_ids: Sequence[str] = ()
    new_user_item_ids: Any = ()
    new_user_item_external_ids: Sequence[str] = ()

    @property
    def cold_start(self) -> bool:
        return bool(len(self.new_user_item_ids) or len(self.new_user_item_external_ids))


@dataclass(frozen=True)
class Embeddings:
    model: ModelKey
    embeddings: np.ndarray  # float32 (n, D)


@dataclass(frozen=True)
class GraphUpdate:
    model: ModelKey
    node_ids: np.ndarray  # int64 (m,)
    graph: GraphSummary


@dataclass(frozen=True)
class Limits:
    """Per-request limits (``--max-ids-per-request``)."""

    max_ids_per_request: int = 4096


def work_bytes(rows: int, width: int) -> int:
    """Bytes a request of ``rows`` ids holds while it is answered, for admission control: the
    ids, the float32 result (rows x width) as an array, as raw response bytes and inside the
    serialised response, and the int64 argmax."""
    return int(rows) * (8 + 3 * 4 * max(int(width), 1) + 8)


def graph_summary(backend: ModelBackend) -> GraphSummary:
    return GraphSummary(int(backend.num_nodes), int(backend.num_edges),
                        int(backend.num_features), int(backend.num_classes),
                        int(backend.revision))


_NO_DEADLINE_S = 10**6  # gRPC reports a call without a deadline as a huge time remaining


def deadline_from(seconds_left: float | None) -> float | None:
    """A caller's remaining time as a monotonic deadline (None: no deadline)."""
    if seconds_left is None or seconds_left > _NO_DEADLINE_S:
        return None
    return time.monotonic() + max(seconds_left, 0.0)


def inductive_specs(nodes: Iterable[Any]) -> list[InductiveSpec]:
    """InductiveSpec rows from objects with ``id``, ``features``, ``neighbors``, ``in_neighbors``
    (the qgnn.v1 InductiveNode message, or any look-alike)."""
    return [InductiveSpec(int(n.id), np.asarray(n.features, np.float32),
                          np.asarray(n.neighbors, np.int64), np.asarray(n.in_neighbors, np.int64))
            for n in nodes]
