"""Serving a sharded bundle: precomputed INT8 node predictions, one shard per graph partition.

Partitioned training (docs/partitioned.md) ends with distributed layer-wise inference; each rank
writes its partition's outputs as per-row symmetric INT8 (``q``, ``scale``) with its nodes' ids
and in-edges. A sharded bundle (``model.format: "qgnn-sharded"``) holds some or all of those
shards plus the partition book ``sharding/owner.npy`` (the shard of every node), so a replica
that holds only shard ``p`` answers ids of other shards with NOT_FOUND naming the shard that owns
them (routing information), and a replica holding every shard answers all ids. No ONNX runs at
request time: a shard's predictions are a lookup, the dequantised row through a softmax.

Files (docs/partitioned.md): ``sharding/owner.npy`` int32 (N,); per held shard ``p``:
``shards/<p>/nodes.npy`` int64 sorted ids, ``shards/<p>/predictions.npy`` int8 (n_p, C),
``shards/<p>/scales.npy`` float32 (n_p,), ``shards/<p>/graph/{indptr,indices}.npy`` (in-edges,
global source ids). The manifest's ``sharding`` object says ``num_shards`` and ``held``.
"""

from __future__ import annotations

import numpy as np
from qgnn.runtime.backend import BackendOptions, ModelBackend
from qgnn.runtime.backend_loaders import register_backend_loader
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.errors import BundleError, FailedPreconditionError, ServingError

SHARDED_FORMAT = "qgnn-sharded"
OWNER = "sharding/owner.npy"
SHARD_FILES = ("nodes", "predictions", "scales", "graph/indptr", "graph/indices")


def shard_file(part: int, name: str) -> str:
    return f"shards/{part}/{name}.npy"


class ShardNotServedError(ServingError, LookupError):
    """Ids of a shard this replica does not hold; the message names the owning shard."""

    code = "NOT_FOUND"


class ShardedBackend:
    """The data plane's ``ModelBackend`` for a sharded bundle (node task)."""

    def __init__(self, bundle: Bundle) -> None:
        self.manifest = bundle.manifest
        task = self.manifest.model.task
        if task != "node":
            raise BundleError("manifest.json", f"{SHARDED_FORMAT} bundles serve node "
                                               f"predictions; model.task is {task!r}")
        sharding = self.manifest.sharding
        if not isinstance(sharding, dict) or not isinstance(sharding.get("held"), list):
            raise BundleError("manifest.json", "a qgnn-sharded bundle needs sharding.held "
                                               "(the shards it holds) and sharding.num_shards")
        self.num_shards = int(sharding["num_shards"])
        self.held = sorted(int(p) for p in sharding["held"])
        if not self.held or not all(0 <= p < self.num_shards for p in self.held):
            raise BundleError("manifest.json", f"sharding.held {self.held} must name shards "
                                               f"in [0, {self.num_shards})")
        self.owner = bundle.array(OWNER)
        self._nodes, self._q, self._scale = {}, {}, {}
        for p in self.held:
            nodes = bundle.array(shard_file(p, "nodes"))
            q, scale = bundle.array(shard_file(p, "predictions")), bundle.array(
                shard_file(p, "scales"))
            if q.shape[0] != nodes.size or scale.shape != (nodes.size,):
                raise BundleError(shard_file(p, "predictions"),
                                  f"{q.shape[0]} rows and {scale.shape} scales for "
                                  f"{nodes.size} nodes")
            if not np.array_equal(np.flatnonzero(self.owner == p), nodes):
                raise BundleError(shard_file(p, "nodes"), f"disagrees with {OWNER} on the "
                                                          f"nodes of shard {p}")
            self._nodes[p], self._q[p], self._scale[p] = nodes, q, scale
        self._classes = int(self._q[self.held[0]].shape[1])
        self._edges = self.manifest.graph.num_edges

    # -- sizes -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.manifest.model.name

    @property
    def version(self) -> int:
        return self.manifest.model.version

    @property
    def task(self) -> str:
        return "node"

    @property
    def num_nodes(self) -> int:
        return int(self.owner.size)

    @property
    def num_edges(self) -> int:
        return self._edges

    @property
    def num_features(self) -> int:
        return self.manifest.graph.num_features

    @property
    def num_classes(self) -> int:
        return self._classes

    @property
    def embedding_dim(self) -> int:
        return 0

    @property
    def revision(self) -> int:
        return 0

    @property
    def trial_node(self) -> int:
        """A node this replica serves, for the load check's trial request."""
        return int(self._nodes[self.held[0]][0])

    # -- requests ----------------------------------------------------------------------------

    def check_ids(self, ids: np.ndarray, field: str) -> None:
        """Refuse ids of shards not held here, before they join a batch (the data plane's
        hook), naming the shard that serves them."""
        owners = self.owner[ids]
        foreign = ~np.isin(owners, self.held)
        if foreign.any():
            first = int(np.flatnonzero(foreign)[0])
            raise ShardNotServedError(
                f"{field}[{first}]: node {int(ids[first])} belongs to shard "
                f"{int(owners[first])} of {self.num_shards}; this replica of "
                f"{self.name} v{self.version} serves shard(s) {self.held} "
                f"({int(foreign.sum())} of {len(ids)} ids are elsewhere)")

    def predict_nodes(self, ids: np.ndarray, inductive: object = None) -> np.ndarray:
        if inductive is not None:
            raise FailedPreconditionError(f"{self.name}: a sharded bundle serves precomputed "
                                          f"predictions; inductive nodes need the ONNX engine")
        self.check_ids(ids, "node_ids")
        logits = np.empty((ids.size, self._classes), np.float64)
        owners = self.owner[ids]
        for p in np.unique(owners).tolist():
            at = np.flatnonzero(owners == p)
            rows = np.searchsorted(self._nodes[p], ids[at])
            logits[at] = self._q[p][rows].astype(np.float64) * self._scale[p][rows, None]
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def _node_only(self, what: str) -> FailedPreconditionError:
        return FailedPreconditionError(f"{self.name}: a sharded bundle serves node predictions "
                                       f"only; {what} is not available")

    def predict_links(self, pairs: np.ndarray, inductive: object = None) -> np.ndarray:
        raise self._node_only("PredictLinks")

    def recommend(self, user: int, k: int, exclude_seen: bool, candidates: object,
                  inductive: object = None) -> tuple[np.ndarray, np.ndarray]:
        raise self._node_only("Recommend")

    def embed(self, ids: np.ndarray, inductive: object = None) -> np.ndarray:
        raise self._node_only("Embed")

    def update_graph(self, features: object, edges: object) -> np.ndarray:
        raise self._node_only("UpdateGraph")

    def close(self) -> None:
        self._nodes.clear()
        self._q.clear()
        self._scale.clear()


def load_sharded(bundle: Bundle, options: BackendOptions) -> ModelBackend:
    return ShardedBackend(bundle)


def register() -> None:
    """Registers :func:`load_sharded` for ``qgnn-sharded`` bundles."""
    register_backend_loader(load_sharded, format=SHARDED_FORMAT)
