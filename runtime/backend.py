"""What one loaded model version must provide to be served: :class:`ModelBackend`.

The engine in ``qgnn.runtime.engine`` implements it; tests use a small numpy backend. Backends never
see protobuf, and the gRPC servicers never see backends (they go through the data plane).
Shapes: ids are int64 (n,); pairs int64 (n, 2); probabilities float32 (n, C); scores float32 (n,);
embeddings float32 (n, D); new node features float32 (m, F).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from qgnn.runtime.bundle.manifest import Manifest
from qgnn.runtime.metrics import MetricsObserver


@dataclass(frozen=True)
class InductiveNodes:
    """Nodes given with one request only, packed: ``ids`` int64 (m,) (all >= num_nodes, unique),
    ``features`` float32 (m, F), ``edges`` int64 (e, 2) directed (src, dst) rows: a ``neighbors``
    entry u of node v gives (u, v) and (v, u), an ``in_neighbors`` entry gives (u, v)."""

    ids: np.ndarray
    features: np.ndarray
    edges: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class BackendOptions:
    """What the server tells a backend loader: intra-op ``threads``, ``portable`` (stock
    onnxruntime function bodies instead of compiled kernels), the kernels' ``isa`` level (None:
    the host's default) and an ``observer`` to report subgraph sizes and stage timings to the
    metrics."""

    threads: int = 2
    portable: bool = False
    observer: MetricsObserver = field(default_factory=lambda: MetricsObserver(None, ""))
    isa: str | None = None
    precompute: str = "off"  # node outputs materialised at load: auto, on, off


@runtime_checkable
class ModelBackend(Protocol):
    """One loaded model version. Methods are called from the model's batcher thread, one at a
    time, with ids already validated (in range, or ids of ``inductive``); they return fresh
    arrays. The size properties are also read from request threads (for validation), so they
    must stay cheap and safe to read while a method runs; the graph only ever grows."""

    manifest: Manifest

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def task(self) -> str:
        """'node' or 'link'."""
    @property
    def num_nodes(self) -> int:
        """Nodes in the served graph now (grows with update_graph)."""
    @property
    def num_edges(self) -> int: ...
    @property
    def num_features(self) -> int: ...
    @property
    def num_classes(self) -> int:
        """C for node classification, 0 for link prediction."""
    @property
    def embedding_dim(self) -> int: ...
    @property
    def revision(self) -> int:
        """Number of graph updates applied since the bundle's graph."""

    def predict_nodes(self, ids: np.ndarray, inductive: InductiveNodes | None = None
                      ) -> np.ndarray:
        """Class probabilities float32 (n, C), rows summing to 1, in ``ids`` order."""
    def predict_links(self, pairs: np.ndarray, inductive: InductiveNodes | None = None
                      ) -> np.ndarray:
        """Edge probabilities float32 (n,) for (src, dst) rows of ``pairs`` (n, 2)."""
    def recommend(self, user: int, k: int, exclude_seen: bool, candidates: np.ndarray | None,
                  inductive: InductiveNodes | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The best <= k items for ``user``: (ids int64, scores float32), best first, ties by
        ascending id; ``candidates`` None means every item."""
    def embed(self, ids: np.ndarray, inductive: InductiveNodes | None = None) -> np.ndarray:
        """Final node representations float32 (n, D)."""
    def update_graph(self, features: np.ndarray | None, edges: np.ndarray | None) -> np.ndarray:
        """Appends nodes (features (m, F)) and directed edges ((e, 2), may use the new ids);
        returns the new ids, num_nodes .. num_nodes + m - 1. All or nothing."""
    def close(self) -> None: ...

