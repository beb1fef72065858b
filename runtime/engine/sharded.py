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
Which shard owns which node is :mod:`.shard_book`'s; link bundles are served by
:mod:`.sharded_links`.
"""

from __future__ import annotations

import numpy as np
from qgnn.runtime.backend import BackendOptions, ModelBackend
from qgnn.runtime.backend_loaders import register_backend_loader
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.engine.shard_book import (
    OWNER,
    SHARDED_FORMAT,
    ShardBook,
    ShardedSizes,
    ShardNotServedError,
    shard_file,
)
from qgnn.runtime.errors import BundleError, FailedPreconditionError

SHARD_FILES = ("nodes", "predictions", "scales", "graph/indptr", "graph/indices")

__all__ = ["OWNER", "SHARDED_FORMAT", "SHARD_FILES", "ShardNotServedError", "ShardedBackend",
           "load_sharded", "register", "shard_file"]


class ShardedBackend(ShardedSizes):
    """The data plane's ``ModelBackend`` for a sharded bundle (node task)."""

    def __init__(self, bundle: Bundle) -> None:
        self.manifest = bundle.manifest
        task = self.manifest.model.task
        if task != "node":
            raise BundleError("manifest.json", f"the node backend of {SHARDED_FORMAT} bundles "
                                               f"serves node predictions; model.task is "
                                               f"{task!r}")
        self.book = ShardBook(bundle)
        self.held = self.book.held
        self.num_shards = self.book.num_shards
        self.owner = self.book.owner
        self._q, self._scale = {}, {}
        for p in self.held:
            n = self.book.nodes[p].size
            q, scale = bundle.array(shard_file(p, "predictions")), bundle.array(
                shard_file(p, "scales"))
            if q.shape[0] != n or scale.shape != (n,):
                raise BundleError(shard_file(p, "predictions"),
                                  f"{q.shape[0]} rows and {scale.shape} scales for "
                                  f"{n} nodes")
            self._q[p], self._scale[p] = q, scale
        self._classes = int(self._q[self.held[0]].shape[1])

    # -- sizes -------------------------------------------------------------------------------

    @property
    def task(self) -> str:
        return "node"

    @property
    def num_classes(self) -> int:
        return self._classes

    @property
    def embedding_dim(self) -> int:
        return 0

    # -- requests ----------------------------------------------------------------------------

    def check_ids(self, ids: np.ndarray, field: str) -> None:
        """Refuse ids of shards not held here, before they join a batch (the data plane's
        hook), naming the shard that serves them."""
        self.book.not_served(ids, field)

    def predict_nodes(self, ids: np.ndarray, inductive: object = None) -> np.ndarray:
        if inductive is not None:
            raise FailedPreconditionError(f"{self.name}: a sharded bundle serves precomputed "
                                          f"predictions; inductive nodes need the ONNX engine")
        self.check_ids(ids, "node_ids")
        logits = np.empty((ids.size, self._classes), np.float64)
        for p, at, rows in self.book.rows(ids):
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
        self.book.close()
        self._q.clear()
        self._scale.clear()


def load_sharded(bundle: Bundle, options: BackendOptions) -> ModelBackend:
    return ShardedBackend(bundle)


def register() -> None:
    """Registers :func:`load_sharded` for ``qgnn-sharded`` bundles."""
    register_backend_loader(load_sharded, format=SHARDED_FORMAT)
