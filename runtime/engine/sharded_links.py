"""Serving a sharded link bundle: PredictLinks and Recommend from per-shard INT8 embeddings.

Distributed layer-wise inference (``--mode infer``, docs/partitioned.md) runs the bundle's own
INT8 layers over the partitions, so each shard holds exactly the rows the unsharded bundle's
``embeddings/values.npy`` holds for its nodes. Scoring is the engine's, formula for formula
(:func:`~.embeddings.pair_logits`, the MLP decoder, :class:`~.embeddings.EmbeddingIndex`'s
exact top-k): a replica holding every shard answers what the unsharded bundle answers, bit
for bit. Top-k over items spread over shards is each shard's exact top-k merged by
:func:`~.embeddings.best_k` (descending score, ties by ascending id), which is exact: an item
of the global top-k is in its own shard's top-k under the same order.

A replica holding some shards answers only what it can answer exactly: pairs whose two nodes
it holds, users it holds, and (Recommend) only when every eligible item is on a held shard
(candidate_ids from held shards, or a replica of every shard). Anything else is NOT_FOUND
naming the shard that owns the node (:class:`~.shard_book.ShardNotServedError`, the node
path's error). A bipartite run's shard bundles may also replicate the item table
(``sharding.items: "replicated"``, ``items/{nodes,embeddings,embedding_scales}.npy``: every
item's row, in id order): such a replica holds every item, so it answers its users'
Recommend over the whole catalogue and any (its user, item) pair, with one top-k over that
table. Node types, external ids and serving-only seen items are global arrays every
bundle carries (the catalogue, like the partition book).

Files per held shard ``p`` (besides ``nodes.npy``): ``embeddings.npy`` int8 (n_p, D),
``embedding_scales.npy`` float32 (n_p,), ``graph/{indptr,indices}.npy`` (in-edges) and
``graph/{out_indptr,out_indices}.npy`` (out-edges: what exclude-seen drops), global ids. A
symmetric graph (every out-list equal to the in-list, as a user-item graph's both-way edges
give) stores its edges once: ``sharding.out_edges`` is ``"in-edges"`` and the out-edge files
are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qgnn.runtime.backend import BackendOptions, ModelBackend
from qgnn.runtime.backend_loaders import register_backend_loader
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.catalogue import load_catalogue
from qgnn.runtime.engine.embeddings import (
    EmbeddingIndex,
    best_k,
    dequantize,
    pair_logits,
    sigmoid,
)
from qgnn.runtime.engine.session import SessionConfig, decoder_logits, decoder_session
from qgnn.runtime.engine.shard_book import (
    SHARDED_FORMAT,
    ShardBook,
    ShardedSizes,
    ShardNotServedError,
    shard_file,
)
from qgnn.runtime.errors import BundleError, FailedPreconditionError, InvalidRequestError

OUT_EDGE_FILES = ("graph/out_indptr", "graph/out_indices")
LINK_SHARD_FILES = ("nodes", "embeddings", "embedding_scales", "graph/indptr", "graph/indices",
                    *OUT_EDGE_FILES)
IN_EDGES = "in-edges"  # sharding.out_edges of a symmetric graph: out-lists are the in-lists
ITEMS_REPLICATED = "replicated"  # sharding.items of a shard bundle holding every item's row
ITEM_FILES = {"nodes": "items/nodes.npy", "embeddings": "items/embeddings.npy",
              "embedding_scales": "items/embedding_scales.npy"}
DECODER_CHUNK = 1 << 16  # items scored per MLP decoder call (the engine's chunk)


class ShardedLinkBackend(ShardedSizes):
    """The data plane's ``ModelBackend`` for a sharded bundle of a link model."""

    def __init__(self, bundle: Bundle, options: BackendOptions | None = None) -> None:
        options = options or BackendOptions()
        self.manifest = bundle.manifest
        if self.manifest.model.task != "link":
            raise BundleError("manifest.json", f"the link backend of {SHARDED_FORMAT} bundles "
                                               f"needs model.task 'link', got "
                                               f"{self.manifest.model.task!r}")
        self.book = ShardBook(bundle)
        self.held = self.book.held
        self.index: dict[int, EmbeddingIndex] = {}
        self._out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        dims = set()
        symmetric = self.manifest.sharding.get("out_edges") == IN_EDGES
        for p in self.held:
            n = self.book.nodes[p].size
            values = np.asarray(bundle.array(shard_file(p, "embeddings")))
            scales = np.asarray(bundle.array(shard_file(p, "embedding_scales")), np.float32)
            if values.ndim != 2 or values.shape[0] != n:
                raise BundleError(shard_file(p, "embeddings"),
                                  f"must be int8 ({n}, D), got {values.dtype} {values.shape}")
            try:
                self.index[p] = EmbeddingIndex(values, scales, threads=options.threads,
                                               isa=options.isa)
            except ValueError as exc:
                raise BundleError(shard_file(p, "embeddings"), str(exc)) from None
            edges = "" if symmetric else "out_"
            out_indptr = np.asarray(bundle.array(shard_file(p, f"graph/{edges}indptr")))
            if out_indptr.shape != (n + 1,):
                raise BundleError(shard_file(p, f"graph/{edges}indptr"),
                                  f"must be ({n + 1},), got {out_indptr.shape}")
            self._out[p] = (out_indptr, bundle.array(shard_file(p, f"graph/{edges}indices")))
            dims.add(int(values.shape[1]))
        if len(dims) != 1:
            raise BundleError(shard_file(self.held[0], "embeddings"),
                              f"shards disagree on the embedding width: {sorted(dims)}")
        self._dim = dims.pop()
        self.catalogue = load_catalogue(bundle, self.book.num_nodes)
        self.decoder = decoder_session(bundle, SessionConfig(threads=options.threads))
        self.items: tuple[np.ndarray, EmbeddingIndex] | None = None
        if self.manifest.sharding.get("items") == ITEMS_REPLICATED:
            self.items = self._load_items(bundle, options)

    def _load_items(self, bundle: Bundle, options: BackendOptions
                    ) -> tuple[np.ndarray, EmbeddingIndex]:
        """The replicated item table: every item's row, in id order."""
        rel = ITEM_FILES["nodes"]
        if not self.catalogue.typed:
            raise BundleError(rel, "replicated items need node types (graph/node_type.npy)")
        nodes = np.asarray(bundle.array(rel))
        if not np.array_equal(nodes, self.catalogue.item_ids()):
            raise BundleError(rel, "must list every item node id, ascending")
        values = np.asarray(bundle.array(ITEM_FILES["embeddings"]))
        scales = np.asarray(bundle.array(ITEM_FILES["embedding_scales"]), np.float32)
        if values.shape != (nodes.size, self._dim):
            raise BundleError(ITEM_FILES["embeddings"], f"must be ({nodes.size}, {self._dim}), "
                                                        f"got {values.shape}")
        try:
            return nodes, EmbeddingIndex(values, scales, threads=options.threads,
                                         isa=options.isa)
        except ValueError as exc:
            raise BundleError(ITEM_FILES["embeddings"], str(exc)) from None

    # -- sizes -------------------------------------------------------------------------------

    @property
    def task(self) -> str:
        return "link"

    @property
    def num_classes(self) -> int:
        return 0

    @property
    def embedding_dim(self) -> int:
        return self._dim

    # -- requests ----------------------------------------------------------------------------

    def _replicated(self, ids: np.ndarray) -> np.ndarray | None:
        """Which ids are items of the replicated item table (None: there is none)."""
        return None if self.items is None else np.isin(ids, self.items[0])

    def check_ids(self, ids: np.ndarray, field: str) -> None:
        """The data plane's hook: ids of shards not held here are refused before batching
        (items too, unless this bundle replicates the item rows)."""
        self.book.not_served(ids, field, also=self._replicated(ids))

    def _precomputed_only(self, inductive: Any) -> None:
        if inductive is not None and len(inductive):
            raise FailedPreconditionError(f"{self.name}: a sharded bundle serves precomputed "
                                          f"embeddings; inductive nodes need the ONNX engine "
                                          f"(an unsharded bundle)")

    def _rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int8 (n, D), float32 (n,)) stored rows of ``ids`` (all held)."""
        values = np.empty((ids.size, self._dim), np.int8)
        scales = np.empty(ids.size, np.float32)
        held = np.isin(self.book.owner[ids], self.held)
        mine = np.flatnonzero(held)
        for p, at, rows in self.book.rows(ids[mine]):
            values[mine[at]], scales[mine[at]] = self.index[p].rows(rows)
        if not held.all():
            assert self.items is not None  # check_ids let only replicated items through
            rest = np.flatnonzero(~held)
            nodes, index = self.items
            values[rest], scales[rest] = index.rows(np.searchsorted(nodes, ids[rest]))
        return values, scales

    def embed(self, ids: np.ndarray, inductive: Any = None) -> np.ndarray:
        self._precomputed_only(inductive)
        self.check_ids(ids, "node_ids")
        return dequantize(*self._rows(ids))

    def predict_links(self, pairs: np.ndarray, inductive: Any = None) -> np.ndarray:
        """Edge probabilities float32 (n,), as the engine scores them (module docstring)."""
        self._precomputed_only(inductive)
        arr = np.asarray(pairs)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InvalidRequestError("pairs", list(arr.shape), "pairs must be (n, 2)")
        flat = arr.reshape(-1).astype(np.int64)
        self.check_ids(flat, "pairs")
        uniq, inverse = np.unique(flat, return_inverse=True)
        values, scales = self._rows(uniq)
        if self.decoder is not None:
            h = dequantize(values, scales)[inverse].reshape(-1, 2, self._dim)
            return sigmoid(decoder_logits(self.decoder, h[:, 0], h[:, 1]))
        return sigmoid(pair_logits(values[inverse].reshape(-1, 2, self._dim),
                                   scales[inverse].reshape(-1, 2)))

    def seen(self, user: int) -> np.ndarray:
        """The user's out-neighbours in the served graph and its serving-only seen items."""
        p = int(self.book.owner[user])
        row = int(np.searchsorted(self.book.nodes[p], user))
        indptr, indices = self._out[p]
        linked = np.asarray(indices[int(indptr[row]):int(indptr[row + 1])], np.int64)
        return np.union1d(linked, self.catalogue.seen_items(user))

    def _shards_for(self, allowed: np.ndarray | None) -> list[int]:
        """The shards holding eligible items; NOT_FOUND when one is not held here."""
        needed = (list(range(self.book.num_shards)) if allowed is None
                  else np.unique(self.book.owner[allowed]).tolist())
        missing = [p for p in needed if p not in self.held]
        if missing:
            what = "every node" if allowed is None else "the eligible items"
            raise ShardNotServedError(
                f"Recommend over {what} needs shard(s) {missing} of {self.book.num_shards}; "
                f"this replica of {self.book.label} serves shard(s) {self.held}: ask a replica "
                f"of every shard, or give candidate_ids of shard(s) {self.held} (bipartite "
                f"runs: or write the shards with --replicate-items)")
        return [int(p) for p in needed]

    def recommend(self, user: int, k: int, exclude_seen: bool = False,
                  candidates: Any = None, inductive: Any = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The engine's Recommend (items only, ties by ascending id, exclude-seen over what
        the user has) over the held shards, merged exactly (module docstring)."""
        self._precomputed_only(inductive)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidRequestError("k", k, "must be an integer >= 1")
        user = int(user)
        self.check_ids(np.asarray([user], np.int64), "user_id")
        self.catalogue.check_user(user, "user_id")
        allowed = self.catalogue.item_ids() if self.catalogue.typed else None
        if candidates is not None:
            cand_in = np.asarray(candidates, np.int64)
            self.check_ids(cand_in, "candidate_ids")
            self.catalogue.check_items(cand_in, "candidate_ids")
            allowed = np.unique(cand_in)
        exclude = np.asarray([user], np.int64)
        if exclude_seen:
            exclude = np.union1d(exclude, self.seen(user))
        query, query_scale = self._rows(np.asarray([user], np.int64))
        if self.items is not None and allowed is not None:  # every item is here, in one table
            tables = [self.items]
        else:
            tables = [(self.book.nodes[p], self.index[p]) for p in self._shards_for(allowed)]
        ids, logits = [], []
        for nodes, index in tables:
            found = self._topk(nodes, index, query[0], float(query_scale[0]), int(k), exclude,
                               allowed)
            ids.append(found[0])
            logits.append(found[1])
        top_ids, top_logits = best_k(np.concatenate(ids), np.concatenate(logits), int(k))
        return top_ids, sigmoid(top_logits)

    def _topk(self, nodes: np.ndarray, index: EmbeddingIndex, query: np.ndarray,
              query_scale: float, k: int, exclude: np.ndarray, allowed: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of one table (rows of the sorted ``nodes``): (global ids, logits
        float64)."""
        cand = None if allowed is None else _rows_in(nodes, allowed)
        hidden = _rows_in(nodes, exclude)
        if self.decoder is None:
            rows, scaled = index.topk(query, k, exclude=hidden, candidates=cand)
            return nodes[rows], scaled * query_scale
        rows = np.arange(nodes.size, dtype=np.int64) if cand is None else cand
        rows = np.setdiff1d(rows, hidden)
        h_user = query * query_scale
        best_ids, best_logits = np.zeros(0, np.int64), np.zeros(0)
        for start in range(0, rows.size, DECODER_CHUNK):
            chunk = rows[start:start + DECODER_CHUNK]
            h = index.dequantized(chunk)
            found = decoder_logits(self.decoder, np.broadcast_to(h_user, h.shape), h)
            best_ids, best_logits = best_k(np.concatenate([best_ids, nodes[chunk]]),
                                           np.concatenate([best_logits, found]), k)
        return best_ids, best_logits

    def update_graph(self, features: object, edges: object) -> np.ndarray:
        raise FailedPreconditionError(f"{self.name}: a sharded bundle serves precomputed "
                                      f"embeddings; UpdateGraph needs the ONNX engine")

    def close(self) -> None:
        self.book.close()
        self.index.clear()
        self.items = None
        self._out.clear()
        self.decoder = None


def _rows_in(nodes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows in the sorted ``nodes`` of those of the sorted ``ids`` it lists (others dropped)."""
    if not nodes.size:
        return np.zeros(0, np.int64)
    at = np.minimum(np.searchsorted(nodes, ids), nodes.size - 1)
    return at[nodes[at] == ids]


def load_sharded_links(bundle: Bundle, options: BackendOptions) -> ModelBackend:
    return ShardedLinkBackend(bundle, options)


def register() -> None:
    """Registers :func:`load_sharded_links` for ``qgnn-sharded`` bundles of link models."""
    register_backend_loader(load_sharded_links, format=SHARDED_FORMAT, task="link")
