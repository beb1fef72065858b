"""Cached per-layer outputs: a changed graph recomputes only the rows its change reaches.

A request-local node (a cold-start user with its interactions) changes the graph a little, but
the k-hop route recomputes the new node's whole L-hop neighbourhood from the features, and a
model that reads ``in_degree`` (GCN) also every node whose in-degree changed and their
neighbours: ~2,000 nodes for a 5-item user on MovieLens-100k. The layer-wise sub-models
(layerwise.py) make a cheaper route exact: keep every layer's boundary tensors for every node of
the bundle's graph (computed once, full neighbourhoods), and for a target node recompute, layer
by layer, only the rows that differ from the cached ones.

Which rows differ (``changed`` = the snapshot's dirty nodes: nodes added after the bundle and
nodes whose in-neighbour list differs from the bundle's, kept by the store): a node's layer-0
row changes when it is new, its in-list changed, or (models reading ``in_degree``) one of its
sources' in-degree changed; its layer-``l`` row also changes when the layer-``l-1`` row of one
of its sources (itself included) changed. Only nodes the target needs are looked at: layer
``L-1`` needs the target, layer ``l-1`` the one-hop block of what layer ``l`` needs. Since the
cache holds the bundle's graph and ``changed`` is always relative to it, graph updates need no
invalidation: their nodes count as changed (cost grows with the delta, as the store's does).

So each layer recomputes exactly its frontier (tests/runtime/engine/test_engine_layer_cache.py
checks the counts and the bits against the model on the whole graph with the user added): for
a new user with k items, k + 1 rows at every layer but the last, plus, for a model reading
in-degrees at 3+ layers, the items' other users at layer 0 (their items' degrees changed).
Finding the frontier must cost less than computing it: layer 0 walks forward from the few
changed nodes (their out-edges), later layers read backward over the one-hop block of their
candidates, which the pass that finds what each layer needs extracted already. Walking forward
there too visited every out-edge of the layer-0 frontier (~65k for a GCN user on
MovieLens-100k, to mark 21 rows) and cost twice the model run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from qgnn.runtime.engine.layerwise import FEATURES, LayerModel, LayerwiseRunner
from qgnn.runtime.engine.store import Snapshot
from qgnn.runtime.engine.subgraph import Extractor, Subgraph

FULL = (-1,)  # one hop, every in-neighbour


def _member(ids: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Whether each of ``ids`` is in ``sorted_set`` (sorted, distinct): a binary search per id,
    cheaper than ``np.isin``'s sort when the set is small or already sorted."""
    if not sorted_set.size:
        return np.zeros(ids.size, bool)
    at = np.minimum(np.searchsorted(sorted_set, ids), sorted_set.size - 1)
    return sorted_set.take(at) == ids


class LayerCache:
    """Boundary tensors of every layer but the last over the bundle's graph, built on first
    use (one layer-wise pass), and the incremental recomputation described above."""

    def __init__(self, runner: LayerwiseRunner, base: Snapshot, extractor: Extractor,
                 uses_degree: bool, chunk_size: int) -> None:
        if base.num_base != base.num_nodes or base.dirty_ids.size:
            raise ValueError("LayerCache: the base snapshot must be the bundle's graph")
        self.runner = runner
        self.base = base
        self.extractor = extractor
        self.uses_degree = uses_degree
        self.chunk_size = chunk_size
        self._tables: list[dict[str, np.ndarray]] | None = None
        self._lock = threading.Lock()

    @property
    def num_base(self) -> int:
        return self.base.num_nodes

    def tables(self) -> list[dict[str, np.ndarray]]:
        with self._lock:
            if self._tables is None:
                self._tables = self.runner.tables(self.base, self.extractor, self.chunk_size)
            return self._tables

    def outputs(self, snapshot: Snapshot, targets: np.ndarray,
                on_rows: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Model outputs (n, C) of distinct ``targets`` on ``snapshot`` (the bundle's graph
        plus any delta), equal to running the whole model on their full neighbourhoods.
        ``on_rows(layer, rows)`` reports how many rows each layer recomputed."""
        tables = self.tables()
        layers = self.runner.layers
        executors = self.runner.executors()
        changed = snapshot.dirty_ids  # sorted; new nodes included
        need: list[np.ndarray] = [np.zeros(0, np.int64)] * len(layers)
        need[-1] = np.asarray(targets, np.int64)
        blocks: list[Subgraph | None] = [None] * len(layers)
        for i in range(len(layers) - 1, 0, -1):
            blocks[i] = self.extractor.extract(snapshot, need[i], FULL)
            need[i - 1] = blocks[i].node_ids
        # rows that changed at the previous layer, sorted: before layer 0, the new nodes' inputs
        prev_ids = changed[changed >= self.num_base]
        prev_rows: dict[str, np.ndarray] = {}
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            dst = need[i]
            block = blocks[i]
            if not last:  # the last layer computes its targets whatever changed
                dirty = (self._dirty_forward(snapshot, dst, changed) if block is None
                         else self._dirty_backward(block, changed, prev_ids))
                if not dirty.all():
                    dst, block = dst[dirty], None
            if on_rows is not None:
                on_rows(i, int(dst.size))
            if not dst.size:
                prev_ids, prev_rows = dst, {}
                continue
            block = block or self.extractor.extract(snapshot, dst, FULL)
            feeds = self._feeds(layer, snapshot, block, tables[i - 1] if i else {},
                                prev_ids, prev_rows)
            out = executors[i].run(feeds, list(layer.outputs))
            if last:
                return out[layer.outputs[0]]
            order = np.argsort(dst, kind="stable")
            prev_ids = dst[order]
            prev_rows = {name: value[order]
                         for name, value in LayerwiseRunner.checked(layer, out, dst.size).items()}
        raise AssertionError("unreachable: the last layer returns")

    def _dirty_forward(self, snapshot: Snapshot, dst: np.ndarray, changed: np.ndarray
                       ) -> np.ndarray:
        """Layer 0: which of ``dst`` have a row that differs from the cache, found forward from
        the few changed nodes. Its inputs are the features, which differ only for new nodes, so
        a row changes when its node is changed (new, or its in-list differs) or, for a model
        reading ``in_degree``, when one of its in-neighbours is changed (a changed in-degree
        reweights that node's out-edges): the changed nodes' out-neighbours."""
        marks = changed
        if self.uses_degree and changed.size:
            marks = np.union1d(marks, snapshot.out_neighbours(changed)[1])
        return np.isin(dst, marks)

    def _dirty_backward(self, block: Subgraph, changed: np.ndarray, prev_ids: np.ndarray
                        ) -> np.ndarray:
        """Layers >= 1: which of ``dst`` (the block's destinations, whose full one-hop block
        was extracted anyway to find what the layer below needs) have a row that differs from
        the cache: a node that is changed itself, or whose own row or an in-neighbour's row
        changed at the layer below (``prev_ids``, sorted), or (models reading ``in_degree``)
        with a changed in-neighbour. Read backward over the block's edges, which are few here
        (the frontier narrows towards the target), where the forward walk would visit every
        out-edge of the layer below's changed rows: with GCN's in-degrees, the out-edges of
        the ~800 users a new user's items reach, ~65k of them, for 21 destinations."""
        hop, sources = block.layers[0], block.node_ids
        tainted = np.union1d(prev_ids, changed) if self.uses_degree else prev_ids
        src_hit = _member(sources, tainted)
        dirty = src_hit[:hop.num_dst] | _member(sources[:hop.num_dst], changed)
        edge_hit = src_hit.take(hop.src)
        if edge_hit.any():
            owner = np.repeat(np.arange(hop.num_dst, dtype=np.int64), np.diff(hop.indptr))
            dirty[owner[edge_hit]] = True
        return dirty

    def _feeds(self, layer: LayerModel, snapshot: Snapshot, block: Subgraph,
               table: dict[str, np.ndarray], prev_ids: np.ndarray,
               prev_rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The layer's block feeds; carried rows from this request's recomputed rows where
        there are some, from the cache otherwise."""
        hop, sources = block.layers[0], block.node_ids
        feeds = {f"indptr_{layer.index}": hop.indptr, f"src_{layer.index}": hop.src}
        if FEATURES in layer.graph_inputs:
            feeds[FEATURES] = np.ascontiguousarray(snapshot.features(sources))
        if "in_degree" in layer.graph_inputs:
            feeds["in_degree"] = np.ascontiguousarray(snapshot.in_degree(sources), np.int64)
        if layer.carried:
            at = np.searchsorted(prev_ids, sources)
            fresh = at < prev_ids.size
            fresh[fresh] = prev_ids[at[fresh]] == sources[fresh]
            if (~fresh & (sources >= self.num_base)).any():
                raise AssertionError("a node added after the bundle was not recomputed")
            cached = np.minimum(sources, self.num_base - 1)
            for name in layer.carried:
                rows = table[name].take(cached, axis=0)
                if fresh.any():
                    rows[fresh] = prev_rows[name][at[fresh]]
                feeds[name] = rows
        return feeds
