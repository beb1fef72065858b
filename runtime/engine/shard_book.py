"""Which shard serves which node: the part of a sharded bundle every task shares.

A sharded bundle (``model.format: "qgnn-sharded"``, docs/partitioned.md) holds some or all of
a partitioned graph's shards plus the partition book ``sharding/owner.npy`` (the shard of
every node, int32 (N,)). Its manifest's ``sharding`` object says ``num_shards`` and ``held``.
:class:`ShardBook` checks both and refuses, before a request joins a batch, the ids of shards
this replica does not hold, naming the shard that owns them (NOT_FOUND: routing information
for the caller). The node backend (sharded.py) and the link backend (sharded_links.py) both
answer through it, so a foreign id gets the same message whatever the method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qgnn.runtime.bundle.manifest import NamedByManifest
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.errors import BundleError, ServingError

SHARDED_FORMAT = "qgnn-sharded"
OWNER = "sharding/owner.npy"


def shard_file(part: int, name: str) -> str:
    """The bundle path of shard ``part``'s array ``name`` (``nodes``, ``graph/indptr``, ...)."""
    return f"shards/{part}/{name}.npy"


class ShardNotServedError(ServingError, LookupError):
    """Ids of a shard this replica does not hold; the message names the owning shard."""

    code = "NOT_FOUND"


class ShardBook:
    """The partition book and the shards one replica holds (checked against the manifest)."""

    def __init__(self, bundle: Bundle) -> None:
        manifest = bundle.manifest
        sharding: Any = manifest.sharding
        if not isinstance(sharding, dict) or not isinstance(sharding.get("held"), list):
            raise BundleError("manifest.json", "a qgnn-sharded bundle needs sharding.held "
                                               "(the shards it holds) and sharding.num_shards")
        self.num_shards = int(sharding["num_shards"])
        self.held = sorted(int(p) for p in sharding["held"])
        if not self.held or not all(0 <= p < self.num_shards for p in self.held):
            raise BundleError("manifest.json", f"sharding.held {self.held} must name shards "
                                               f"in [0, {self.num_shards})")
        self.owner = bundle.array(OWNER)
        self.label = f"{manifest.model.name} v{manifest.model.version}"
        self.nodes: dict[int, np.ndarray] = {}
        for p in self.held:
            nodes = bundle.array(shard_file(p, "nodes"))
            if not np.array_equal(np.flatnonzero(self.owner == p), nodes):
                raise BundleError(shard_file(p, "nodes"), f"disagrees with {OWNER} on the "
                                                          f"nodes of shard {p}")
            self.nodes[p] = nodes

    @property
    def num_nodes(self) -> int:
        return int(self.owner.size)

    @property
    def holds_all(self) -> bool:
        return len(self.held) == self.num_shards

    @property
    def trial_node(self) -> int:
        """A node this replica serves, for the load check's trial request."""
        return int(self.nodes[self.held[0]][0])

    def not_served(self, ids: np.ndarray, field: str, what: str = "node",
                   also: np.ndarray | None = None) -> None:
        """ShardNotServedError naming the first of ``ids`` whose shard is not held here
        (``also``: a mask of ids served anyway, e.g. replicated item rows)."""
        owners = self.owner[ids]
        foreign = ~np.isin(owners, self.held)
        if also is not None:
            foreign &= ~also
        if foreign.any():
            first = int(np.flatnonzero(foreign)[0])
            raise ShardNotServedError(
                f"{field}[{first}]: {what} {int(ids[first])} belongs to shard "
                f"{int(owners[first])} of {self.num_shards}; this replica of "
                f"{self.label} serves shard(s) {self.held} "
                f"({int(foreign.sum())} of {len(ids)} ids are elsewhere)")

    def rows(self, ids: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(shard, positions in ids, rows in that shard)`` for every shard among ``ids``'
        owners (all held)."""
        owners = self.owner[ids]
        out = []
        for p in np.unique(owners).tolist():
            at = np.flatnonzero(owners == p)
            out.append((p, at, np.searchsorted(self.nodes[p], ids[at])))
        return out

    def close(self) -> None:
        self.nodes.clear()


class ShardedSizes(NamedByManifest):
    """What both sharded backends (node and link) report from their manifest and partition
    book: sizes, no graph revisions (sharded bundles take no updates) and a trial node this
    replica serves, for the load check's trial request."""

    book: ShardBook

    @property
    def num_nodes(self) -> int:
        return self.book.num_nodes

    @property
    def num_edges(self) -> int:
        return self.manifest.graph.num_edges

    @property
    def num_features(self) -> int:
        return self.manifest.graph.num_features

    @property
    def revision(self) -> int:
        return 0

    @property
    def trial_node(self) -> int:
        return self.book.trial_node
