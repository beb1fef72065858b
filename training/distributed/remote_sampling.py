"""Neighbour sampling, feature fetching and GNS caches over a partitioned graph.

Each rank holds one :class:`~qgnn.graph.shards.GraphShard`. Sampling a hop for a frontier of
nodes groups them by owner; each owner samples its own nodes' in-neighbours and replies with
the drawn source ids and their sum-form importance weights (three all-to-all rounds per hop:
ids, counts + neighbours, weights). Feature rows of input nodes that are neither owned nor
cached are fetched the same way. All ranks run these rounds in lockstep (every step, every hop),
which the equal per-rank step counts of :func:`balanced_assign` guarantee.

**GNS across ranks.** Rank ``r``'s cache is its own partition (inclusion probability 1) plus
remote nodes drawn independently with ``pi_u = min(1, lam · outdeg_u)`` (Dong et al., KDD 2021;
:mod:`qgnn.training.sampling.cache`), ``lam`` fixed globally. At a refresh every rank announces
its cached ids; an owner restricts a requested node's in-edges to the requester's cache on the
fly (sorted id lists, no per-edge state kept). The input hop of a requester's batch is sampled
by the owner from those restricted lists with the unbiased GNS
weight ``(1 - q_v) · (c_v / n_v) / pi_r(u)``, where ``pi_r(u) = 1`` for ``u`` in part ``r`` and
``q_v`` is 0 when ``v`` has an in-neighbour in part ``r`` and ``prod_u (1 - pi_u)`` otherwise;
destinations with no cached in-neighbour fall back to uniform draws (weight ``d_v / n_v``).
``estimator="normalized"`` rescales each cache-drawn destination's weights to sum to ``d_v``
(biased, far less variance; docs/gns.md). ``estimator="stratified"`` splits ``v``'s in-list
into the part the requester holds (``c_v`` sources) and the rest: up to ``fanout`` draws from
the held part weighted ``c_v / n_v``, plus ``uncached_fanout`` uniform draws from the whole list
of which the non-held ones are kept with weight ``d_v / k`` (fetched from their owners). Given
the cache, each stratum has its own unbiased uniform estimate, so no ``1 / pi`` weight and no
bias toward the requester's partition: the normalized weights average only what the requester
holds, and on a partitioned, homophilous graph that is mostly its own communities.

``estimator="owner-sum"`` aggregates at the owner instead (:mod:`.owner_sum`): the owner of
``v`` sums the features of *all* of ``v``'s in-neighbours it owns into one partial-sum row
(sum-form weight 1) and samples only the rest, from what the requester holds, with the normalized
weights rescaled to sum to the count of that rest. With nothing held in the rest, the row's weight
is ``d_v / c_own`` (the ratio form); with no owned in-neighbour, the held ones sum to ``d_v``.
One row replaces the sampled rows of the owner's sources, which on a partition that cuts few edges
are most of ``v``'s neighbourhood. Only linear input aggregations can take it. Three things keep
its rows from crossing without changing a sum: a destination whose owned sources the requester
holds or fetches anyway gets them as edges (when those cost fewer bytes than the row); a row
that crossed once in a cache period is kept by the requester (:mod:`.row_memo`, as many rows
as its cache); and a cached row crosses the first time a batch reads it, not at the refresh
(for every estimator). Ids cross as int32 when the node count allows.

**Cache affinity.** Before an epoch the owners score each training seed ``s`` for every rank
``r``: the share of ``s``'s in-edges whose source rank ``r`` holds (owned or cached). Seeds then
go to their best-scoring rank under equal capacities (:func:`balanced_assign`); ``random``
assignment deals them out evenly instead, ``owner`` keeps them on their owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from qgnn.graph.container import Adjacency
from qgnn.graph.neighbourhood import SampledBlock, sample_neighbors
from qgnn.graph.shards import GraphShard
from qgnn.training.distributed.exchange import Exchanger
from qgnn.training.distributed.memory import MemoryLedger
from qgnn.training.distributed.row_memo import RowMemo
from qgnn.training.sampling.cache import draw_cache, inclusion_probabilities, miss_probability

# qgnn.training.sampling.gns's three, and owner-side aggregation (partitioned training only)
ESTIMATORS = ("unbiased", "normalized", "stratified", "owner-sum")
OWNER_SUM = "owner-sum"
Assignment = Literal["affinity", "random", "owner"]
ASSIGNMENTS: tuple[Assignment, ...] = ("affinity", "random", "owner")


def relabel(dst_nodes: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(node_ids, src)``: ``dst_nodes`` (distinct) first, then the new ids of ``nbr`` in order
    of first appearance; ``node_ids[src] == nbr``. Sort-based, so no ``(N,)`` scratch array."""
    both = np.concatenate([dst_nodes, nbr])
    uniq, first, inverse = np.unique(both, return_index=True, return_inverse=True)
    new = np.flatnonzero(first >= dst_nodes.size)
    new = new[np.argsort(first[new], kind="stable")]
    label = np.empty(uniq.size, np.int64)
    label[inverse[: dst_nodes.size]] = np.arange(dst_nodes.size, dtype=np.int64)
    label[new] = dst_nodes.size + np.arange(new.size, dtype=np.int64)
    node_ids = np.concatenate([dst_nodes, uniq[new]])
    return node_ids, label[inverse[dst_nodes.size:]]


def balanced_assign(scores: np.ndarray, capacity: int) -> np.ndarray:
    """Rank per seed (``-1``: sits out), each rank taking exactly ``capacity`` seeds when
    ``len(scores) >= capacity · W``: seeds propose to their best rank not yet full, ranks keep
    their best-scoring proposals (ties by position), rejected seeds try their next rank."""
    n, w = scores.shape
    if capacity * w > n:
        raise ValueError(f"balanced_assign: {w} ranks x {capacity} seeds > {n} seeds")
    assign = np.full(n, -1, np.int64)
    remaining = np.full(w, capacity, np.int64)
    banned = np.zeros((n, w), np.bool_)
    for _ in range(w):
        todo = np.flatnonzero(assign < 0)
        if not todo.size or not remaining.any():
            break
        choice = np.argmax(np.where(banned[todo], -np.inf, scores[todo]), axis=1)
        for r in range(w):
            cand = todo[choice == r]
            if not cand.size:
                continue
            order = cand[np.argsort(-scores[cand, r], kind="stable")]
            take = int(min(remaining[r], order.size))
            assign[order[:take]] = r
            remaining[r] -= take
            banned[order[take:], r] = True
    return assign


@dataclass(eq=False)
class PartialSums:
    """The owner-sum input hop's partial-sum rows: row ``k`` is the (scaled) feature sum of the
    in-neighbours that destination ``dst[k]`` (a position among the input hop's destinations)
    has in rank ``sender[k]``'s part, to enter the aggregation with sum-form ``weight[k]``."""

    dst: np.ndarray  # (k,) int64
    weight: np.ndarray  # (k,) float32
    rows: torch.Tensor  # (k, F)
    sender: np.ndarray  # (k,) int64, the owner that summed the row


@dataclass(eq=False)
class RemoteCache:
    """This rank's cache of remote nodes: sorted ids and their feature rows. A row is fetched
    the first time a batch reads it (``loaded``), not at the refresh: rows no batch of the
    period reads never cross, and the cache's membership (what sampling sees) is the same."""

    ids: np.ndarray  # (m,) int64 sorted, none owned by this rank
    x: torch.Tensor | None  # (m, F)
    loaded: np.ndarray | None = None  # (m,) bool: row fetched; None: every row present

    @classmethod
    def empty_rows(cls, ids: np.ndarray, width: int | None) -> RemoteCache:
        """Cached ``ids`` whose rows are still at their owners."""
        ids = np.sort(ids)
        x = None if width is None else torch.zeros((ids.size, width), dtype=torch.float32)
        return cls(ids, x, np.zeros(ids.size, np.bool_))

    def missing(self, slots: np.ndarray) -> np.ndarray:
        """Which of ``slots`` (cache positions) have no row yet."""
        return np.zeros(slots.size, np.bool_) if self.loaded is None else ~self.loaded[slots]

    def fill(self, slots: np.ndarray, rows: torch.Tensor) -> None:
        if self.x is None or self.loaded is None:
            raise ValueError("RemoteCache.fill: this cache keeps no rows")
        self.x[torch.from_numpy(slots)] = rows
        self.loaded[slots] = True

    def loaded_bytes(self) -> int:
        if self.x is None:
            return 0
        rows = self.ids.size if self.loaded is None else int(self.loaded.sum())
        return rows * self.x.shape[1] * self.x.element_size()

    def slots(self, ids: np.ndarray) -> np.ndarray:
        """Position in the cache of each id, ``-1`` when not cached."""
        if not self.ids.size:
            return np.full(ids.size, -1, np.int64)
        pos = np.minimum(np.searchsorted(self.ids, ids), self.ids.size - 1)
        return np.where(self.ids[pos] == ids, pos, -1)


def _member(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if not sorted_ids.size:
        return np.zeros(ids.size, np.bool_)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return sorted_ids[pos] == ids


def _segments(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row position per edge, local edge positions)`` of the in-edges of ``rows``."""
    counts = indptr[rows + 1] - indptr[rows]
    starts = np.repeat(indptr[rows] - (np.cumsum(counts) - counts), counts)
    return (np.repeat(np.arange(rows.size, dtype=np.int64), counts),
            starts + np.arange(int(counts.sum()), dtype=np.int64))


class PartitionedSampler:
    """This rank's half of every sampling and fetching round (module docstring)."""

    def __init__(self, shard: GraphShard, ex: Exchanger, fanouts: Sequence[int], *,
                 gns: bool, cache_fraction: float, ledger: MemoryLedger,
                 estimator: str = "unbiased", uncached_fanout: int = 4,
                 source_scale: torch.Tensor | None = None) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"--gns-estimator: expected one of {ESTIMATORS}, got "
                             f"{estimator!r}")
        if isinstance(uncached_fanout, bool) or not isinstance(uncached_fanout, int) \
                or uncached_fanout < 1:
            raise ValueError(f"--uncached-fanout: expected an int >= 1, got "
                             f"{uncached_fanout!r}")
        self.estimator = estimator
        self.uncached_fanout = uncached_fanout
        # owner-sum: a factor per owned node applied before summing (GCN's (d_u + 1)^-1/2)
        self.source_scale = source_scale
        self.shard, self.ex, self.ledger = shard, ex, ledger
        self.fanouts = tuple(fanouts)
        self.gns = gns
        self.rank, self.world = ex.ctx.rank, ex.world
        self.csc = shard.csc
        self.parts = shard.parts
        self.deg = np.diff(shard.indptr)
        # part of each local in-edge's source (1 byte an edge for up to 127 ranks)
        self.edge_owner = shard.parts[shard.indices].astype(
            np.int8 if self.world < 128 else np.int32)
        ledger.charge("shard", sum(shard.nbytes().values()) + self.edge_owner.nbytes)
        self.cache = RemoteCache(np.zeros(0, np.int64), None)
        # ids cross as int32 when every global id fits (they are what the shards number)
        self.id_dtype = np.dtype(np.int32 if shard.num_nodes < 2**31 else np.int64)
        # owner-sum: partial-sum rows each requester keeps (out: the ids this owner sent,
        # in: the rows this rank received), reset at every refresh
        self.row_memo_out, self.row_memo_in = RowMemo(self.world), RowMemo(self.world)
        # every rank's cached remote ids (sorted): an owner restricts in-lists on the fly
        self.caches_of: list[np.ndarray] = [np.zeros(0, np.int64)] * self.world
        self.inclusion = np.zeros(0)
        self.miss = np.zeros(0)
        self.neighbour_in_part = np.zeros((0, 0), np.bool_)
        if gns:
            self._setup_gns(cache_fraction)

    # ------------------------------------------------------------- GNS setup and refresh

    def _setup_gns(self, cache_fraction: float) -> None:
        """Agree on one cache size that fits every rank's budget, then the global inclusion
        probabilities, per-node miss probabilities and the part-neighbour table."""
        n, f = self.shard.num_nodes, 0 if self.shard.x is None else self.shard.x.shape[1]
        want = cache_fraction * n
        room = self.ledger.room()
        # inclusion (N x 8 B), miss and part-neighbour tables, then per cached node its row,
        # its id here and its id at every owner; owner-sum's row memo holds up to as many rows
        # again (a row and its id here, its id at the owner)
        fixed = n * 8 + self.shard.num_local * (8 + self.world)
        memo = 4 * f + 16 if self.estimator == OWNER_SUM else 0
        if room is not None:
            fits = max(0.0, (room - fixed) / (4 * f + 8 + 8 * self.world + memo))
            want = min(want, 0.5 * fits)  # the rest: halo tables and batch rows
        agreed = torch.tensor([want], dtype=torch.float64)
        got = self.ex.all_gather_rows(agreed, "structure", "cache-size")
        self.cache_size = float(min(t.item() for t in got))
        if self.cache_size < 1.0:
            raise ValueError(f"rank {self.rank}: no room for a GNS cache within "
                             f"--memory-budget; use the uniform sampler or a larger budget")
        self.inclusion = inclusion_probabilities(self.shard.out_degree, self.cache_size)
        self.miss = miss_probability(self.csc, self.inclusion)
        rows = np.repeat(np.arange(self.shard.num_local), self.deg)
        self.neighbour_in_part = np.zeros((self.shard.num_local, self.world), np.bool_)
        self.neighbour_in_part[rows, self.edge_owner] = True
        self.ledger.charge("gns-tables", self.inclusion.nbytes + self.miss.nbytes
                           + self.neighbour_in_part.nbytes)

    def refresh(self, rng: np.random.Generator) -> None:
        """Draw this rank's remote cache and tell every owner; the cached rows are fetched when
        a batch first reads them. Empties the owner-sum row memos."""
        if not self.gns:
            return
        ids = draw_cache(self.inclusion, rng)
        self.use_cache(ids[self.parts[ids] != self.rank])

    def use_cache(self, ids: np.ndarray) -> None:
        """Make ``ids`` (remote nodes) this rank's cache and tell every owner (a collective:
        every rank calls it). :meth:`refresh` draws them; a test may name them."""
        if not self.gns:
            raise ValueError("use_cache: only the GNS sampler keeps a cache")
        ids = np.asarray(ids, np.int64)
        if (self.parts[ids] == self.rank).any():
            raise ValueError(f"use_cache: rank {self.rank} would cache nodes it owns")
        self.ledger.release("cache")
        self.cache = RemoteCache(np.zeros(0, np.int64), None)
        announced = self.ex.all_gather_rows(torch.from_numpy(ids.astype(self.id_dtype)),
                                            "structure", "cache-ids")
        self.caches_of = [np.sort(c.numpy().astype(np.int64)) for c in announced]
        self.ledger.charge("caches-of-ranks", sum(c.nbytes for c in self.caches_of))
        width = None if self.shard.x is None else self.shard.x.shape[1]
        self.cache = RemoteCache.empty_rows(ids, width)  # rows come on first use
        self.ledger.charge("cache", ids.nbytes)
        per_peer = max(self.world - 1, 1)
        self.row_memo_out.reset([c.size // per_peer for c in self.caches_of])
        self.row_memo_in.reset([ids.size // per_peer] * self.world)
        self.ledger.release("row-memo")
        self.ledger.release("row-memo-ids")

    # ------------------------------------------------------------- seed assignment

    def held_by(self, requester: int, edges: np.ndarray) -> np.ndarray:
        """Whether rank ``requester`` holds the source of each local edge (owns or caches it)."""
        return (self.edge_owner[edges] == requester) | _member(self.caches_of[requester],
                                                               self.csc.indices[edges])

    def coverage(self, seeds_local: np.ndarray) -> np.ndarray:
        """``(len(seeds), W)``: share of each owned seed's in-edges whose source rank ``r``
        holds (its part, or its cache)."""
        row, edges = _segments(self.shard.indptr, seeds_local)
        deg = np.maximum(self.deg[seeds_local], 1).astype(np.float64)
        cols = [np.bincount(row[self.held_by(r, edges)], minlength=seeds_local.size) / deg
                for r in range(self.world)]
        return np.stack(cols, axis=1).astype(np.float32)

    def assign(self, train_local: np.ndarray, how: Assignment, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's seeds for this rank ``(global ids, labels)``; every rank gets the same
        number (the global training set divided by W, remainder sitting out)."""
        if how not in ASSIGNMENTS:
            raise ValueError(f"--assignment: expected one of {ASSIGNMENTS}, got {how!r}")
        shard = self.shard
        ids = shard.owned[train_local]
        labels = shard.y[train_local]
        if how == "affinity":
            scores = self.coverage(train_local)
        else:
            scores = np.zeros((ids.size, self.world), np.float32)
            scores[:, self.rank] = 1.0
        all_ids = torch.cat(self.ex.all_gather_rows(torch.from_numpy(ids), "assignment")).numpy()
        all_y = torch.cat(self.ex.all_gather_rows(torch.from_numpy(labels),
                                                  "assignment")).numpy()
        all_scores = torch.cat(self.ex.all_gather_rows(torch.from_numpy(scores),
                                                       "assignment")).numpy()
        order = np.argsort(all_ids, kind="stable")  # identical on every rank
        all_ids, all_y, all_scores = all_ids[order], all_y[order], all_scores[order]
        capacity = all_ids.size // self.world
        if how == "random":
            perm = rng.permutation(all_ids.size)
            assign = np.full(all_ids.size, -1, np.int64)
            assign[perm[: capacity * self.world]] = np.arange(capacity * self.world) % self.world
        else:
            # a little shared noise breaks ties between equally good ranks evenly
            noise = rng.random(all_scores.shape, dtype=np.float32) * 1e-3
            assign = balanced_assign(all_scores + noise, capacity)
        mine = assign == self.rank
        self.ledger.charge("assignment", all_ids.nbytes + all_y.nbytes + all_scores.nbytes)
        return all_ids[mine], all_y[mine]

    # ------------------------------------------------------------- serving owners' side

    def _serve(self, requester: int, ids: np.ndarray, fanout: int, gns_hop: bool,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Owner side: ``(counts per id, neighbours, sum-form weights)`` for owned ``ids``."""
        rows = self.shard.local_index(ids)
        full = self.deg[rows]
        if not gns_hop:
            nbr, pos, _ = sample_neighbors(self.csc, rows, fanout, rng)
            drawn = np.bincount(pos, minlength=rows.size)
            w = full[pos] / np.maximum(drawn[pos], 1)
            return drawn, nbr, w.astype(np.float32)
        row, edges = _segments(self.shard.indptr, rows)
        keep = self.held_by(requester, edges)
        cdeg = np.bincount(row[keep], minlength=rows.size)
        indptr = np.zeros(rows.size + 1, np.int64)
        np.cumsum(cdeg, out=indptr[1:])
        kept = edges[keep]
        adj = Adjacency(indptr, self.csc.indices[kept], kept)  # rows = positions in ``rows``
        rc, rf = np.flatnonzero(cdeg > 0), np.flatnonzero(cdeg == 0)
        nbr_c, pos_c, _ = sample_neighbors(adj, rc, fanout, rng)
        nbr_f, pos_f, _ = sample_neighbors(self.csc, rows[rf], fanout, rng)
        dst_c, dst_f = rc[pos_c], rf[pos_f]
        drawn_c = np.bincount(dst_c, minlength=rows.size)
        drawn_f = np.bincount(dst_f, minlength=rows.size)
        parts = [(dst_f, nbr_f, full[dst_f] / np.maximum(drawn_f[dst_f], 1))]
        if self.estimator == "stratified":
            w_c = cdeg[dst_c] / drawn_c[dst_c]
            nbr_u, pos_u, eid_u = sample_neighbors(self.csc, rows[rc], self.uncached_fanout, rng)
            dst_u = rc[pos_u]
            drawn_u = np.bincount(dst_u, minlength=rows.size)
            out = ~self.held_by(requester, eid_u)
            dst_u = dst_u[out]
            parts.append((dst_u, nbr_u[out], full[dst_u] / drawn_u[dst_u]))
        else:
            q = np.where(self.neighbour_in_part[rows, requester], 0.0, self.miss[rows])
            pi = np.where(self.parts[nbr_c] == requester, 1.0, self.inclusion[nbr_c])
            w_c = (1.0 - q[dst_c]) * cdeg[dst_c] / drawn_c[dst_c] / pi
            if self.estimator == "normalized":  # ratio form: each destination's sum is d_v
                total = np.bincount(dst_c, weights=w_c, minlength=rows.size)
                w_c = w_c * (full / np.where(total > 0, total, 1.0))[dst_c]
        parts.insert(0, (dst_c, nbr_c, w_c))
        dst = np.concatenate([p[0] for p in parts])
        order = np.argsort(dst, kind="stable")
        drawn = np.bincount(dst, minlength=rows.size)
        nbr = np.concatenate([p[1] for p in parts])[order]
        w = np.concatenate([p[2] for p in parts])[order]
        return drawn, nbr, w.astype(np.float32)

    def _serve_owner_sum(self, requester: int, ids: np.ndarray, fanout: int,
                         rng: np.random.Generator
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
        """Owner side of the owner-sum input hop for owned ``ids``: ``(counts, neighbours,
        sum-form weights)`` of the sources drawn from the rest (not owned here), the weight of
        each id's partial-sum row (0: no row) and the rows of the ids that have one."""
        shard = self.shard
        if shard.x is None:
            raise ValueError("--gns-estimator owner-sum: the shards need features")
        rows = shard.local_index(ids)
        full = self.deg[rows]
        row, edges = _segments(shard.indptr, rows)
        own = self.edge_owner[edges] == self.rank
        c_own = np.bincount(row[own], minlength=rows.size)
        keep = ~own & self.held_by(requester, edges)
        c_held = np.bincount(row[keep], minlength=rows.size)
        indptr = np.zeros(rows.size + 1, np.int64)
        np.cumsum(c_held, out=indptr[1:])
        kept = edges[keep]
        rc = np.flatnonzero(c_held > 0)
        nbr_c, pos_c, _ = sample_neighbors(Adjacency(indptr, self.csc.indices[kept], kept), rc,
                                           fanout, rng)
        dst_c = rc[pos_c]
        drawn_c = np.bincount(dst_c, minlength=rows.size)
        pi = np.where(self.parts[nbr_c] == requester, 1.0, self.inclusion[nbr_c])
        w_c = c_held[dst_c] / drawn_c[dst_c] / pi
        rest = full - c_own  # the sources not owned here: the held ones stand for them
        total = np.bincount(dst_c, weights=w_c, minlength=rows.size)
        w_c = w_c * (rest / np.where(total > 0, total, 1.0))[dst_c]
        # neither an owned nor a held source: uniform draws over the whole list, fetched
        rf = np.flatnonzero((c_own == 0) & (c_held == 0) & (full > 0))
        nbr_f, pos_f, _ = sample_neighbors(self.csc, rows[rf], fanout, rng)
        dst_f = rf[pos_f]
        drawn_f = np.bincount(dst_f, minlength=rows.size)
        dst = np.concatenate([dst_c, dst_f])
        nbr = np.concatenate([nbr_c, nbr_f])
        w = np.concatenate([w_c, full[dst_f] / np.maximum(drawn_f[dst_f], 1)])
        row_w = np.where(c_own == 0, 0.0,
                         np.where(c_held > 0, 1.0, full / np.maximum(c_own, 1)))
        own_row, own_src = row[own], self.csc.indices[edges[own]]
        if requester != self.rank:
            # a destination whose owned sources the requester holds or fetches anyway (its
            # cache, or the asked destinations' own rows) gets them as edges of the row's
            # weight instead of a row: the same sum, fewer feature bytes
            spare = self._spare_rows(requester, ids, own_row, own_src, c_own,
                                     self.row_memo_out.known(requester, ids))
            edge = spare[own_row]
            dst = np.concatenate([dst, own_row[edge]])
            nbr = np.concatenate([nbr, own_src[edge]])
            w = np.concatenate([w, row_w[own_row[edge]]])
            row_w = np.where(spare, 0.0, row_w)
        order = np.argsort(dst, kind="stable")
        has = row_w > 0
        summed = has[own_row]
        src = shard.local_index(own_src[summed])
        xs = torch.from_numpy(shard.x).index_select(0, torch.from_numpy(src))
        if self.source_scale is not None:
            xs = xs * self.source_scale[torch.from_numpy(src)].unsqueeze(1)
        slot = np.cumsum(has) - 1  # row of each destination among those with one
        sums = xs.new_zeros((int(has.sum()), xs.shape[1])).index_add_(
            0, torch.from_numpy(slot[own_row[summed]]), xs)
        return (np.bincount(dst, minlength=rows.size), nbr[order], w[order].astype(np.float32),
                row_w.astype(np.float32), sums)

    def _spare_rows(self, requester: int, ids: np.ndarray, own_row: np.ndarray,
                    own_src: np.ndarray, c_own: np.ndarray, remembered: np.ndarray
                    ) -> np.ndarray:
        """Per asked id, whether its owned sources go to ``requester`` as edges instead of a
        partial-sum row: every one of them is in the requester's cache or among ``ids`` (rows
        it holds or fetches anyway), the row is not already in the requester's memo, and the
        edges (an id and a weight each) cost no more bytes than the row."""
        free = _member(self.caches_of[requester], own_src) | _member(np.sort(ids), own_src)
        blocked = np.bincount(own_row[~free], minlength=ids.size) > 0
        width = 0 if self.shard.x is None else self.shard.x.shape[1]
        cheap = c_own * (self.id_dtype.itemsize + 4) <= width * 4
        return (c_own > 0) & ~blocked & cheap & ~remembered

    def _hop(self, nodes: np.ndarray, fanout: int, gns_hop: bool, key: Sequence[int]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, PartialSums | None]:
        """``(dst position in nodes, neighbour id, weight)`` for every node, grouped by dst,
        and the owner-sum hop's partial-sum rows (``None`` on other hops)."""
        owner = self.parts[nodes]
        sel = [np.flatnonzero(owner == r) for r in range(self.world)]
        asks = self.ex.exchange([torch.from_numpy(nodes[s].astype(self.id_dtype)) for s in sel],
                                "structure", "hop-requests")
        summed = gns_hop and self.estimator == OWNER_SUM
        replies_i, replies_w, replies_x = [], [], []
        for r, ask in enumerate(asks):
            rng = np.random.default_rng([*key, self.rank, r])
            ids = ask.numpy().astype(np.int64)
            if summed:
                counts, nbr, w, row_w, sums = self._serve_owner_sum(r, ids, fanout, rng)
                w = np.concatenate([w, row_w])  # one more weight per asked id: its row's
                if r != self.rank:  # rows the requester remembers do not cross again
                    with_row = ids[row_w > 0]
                    known = self.row_memo_out.known(r, with_row)
                    sums = sums[torch.from_numpy(~known)]
                    self.row_memo_out.admit(r, with_row[~known])
                    self.ledger.charge("row-memo-ids", self.row_memo_out.nbytes())
                replies_x.append(sums)
            else:
                counts, nbr, w = self._serve(r, ids, fanout, gns_hop, rng)
            replies_i.append(torch.from_numpy(np.concatenate([counts, nbr]).astype(self.id_dtype)))
            replies_w.append(torch.from_numpy(w))
        got_i = self.ex.exchange(replies_i, "structure", "hop-neighbours")
        got_w = self.ex.exchange(replies_w, "structure", "hop-weights")
        got_x = self.ex.exchange(replies_x, "features", "partial-sums") if summed else []
        pos, nbr, w, sums = [], [], [], []
        for r, s in enumerate(sel):
            body = got_i[r].numpy().astype(np.int64)
            counts = body[: s.size]
            pos.append(np.repeat(s, counts))
            nbr.append(body[s.size:])
            weights = got_w[r].numpy()
            w.append(weights[: nbr[-1].size])
            if summed:
                row_w = weights[nbr[-1].size:]
                sums.append((s[row_w > 0], row_w[row_w > 0]))
                if r != self.rank:
                    got_x[r] = self._remembered_rows(r, nodes[s[row_w > 0]], got_x[r])
        p = np.concatenate(pos)
        order = np.argsort(p, kind="stable")
        partial = None
        if summed:
            partial = PartialSums(
                dst=np.concatenate([d for d, _ in sums]),
                weight=np.concatenate([rw for _, rw in sums]).astype(np.float32),
                rows=torch.cat(got_x),
                sender=np.concatenate([np.full(d.size, r, np.int64)
                                       for r, (d, _) in enumerate(sums)]))
        return p[order], np.concatenate(nbr)[order], np.concatenate(w)[order], partial

    def _remembered_rows(self, owner: int, with_row: np.ndarray, crossed: torch.Tensor
                         ) -> torch.Tensor:
        """Requester side: the partial-sum rows of ``with_row`` (destinations owned by
        ``owner`` that have one, in reply order), the remembered ones from the memo and the
        others from ``crossed``, which are then remembered while there is room."""
        memo = self.row_memo_in
        known = memo.known(owner, with_row)
        if not known.any():
            memo.admit(owner, with_row, crossed)
            self.ledger.charge("row-memo", memo.nbytes())
            return crossed
        out = crossed.new_empty((with_row.size, crossed.shape[1]))
        out[torch.from_numpy(known)] = memo.lookup(owner, with_row[known])
        out[torch.from_numpy(~known)] = crossed
        memo.admit(owner, with_row[~known], crossed)
        self.ledger.charge("row-memo", memo.nbytes())
        return out

    def sample(self, seeds: np.ndarray, key: Sequence[int]) -> list[SampledBlock]:
        """Blocks for ``seeds`` (distinct global ids), input layer first, like
        :func:`~qgnn.graph.neighbourhood.khop_blocks`; the input hop draws from the caches
        under GNS."""
        return self.sample_with_sums(seeds, key)[0]

    def sample_with_sums(self, seeds: np.ndarray, key: Sequence[int]
                         ) -> tuple[list[SampledBlock], PartialSums | None]:
        """:meth:`sample`, and the input hop's partial-sum rows under ``owner-sum`` (their
        ``dst`` index the input block's destinations; :func:`.owner_sum.input_block` joins
        them to it)."""
        nodes = np.asarray(seeds, np.int64)
        hops = []
        partial = None
        last = len(self.fanouts) - 1
        for h, fanout in enumerate(self.fanouts):
            dst, nbr, w, got = self._hop(nodes, fanout, self.gns and h == last, (*key, h))
            partial = got if got is not None else partial
            node_ids, src = relabel(nodes, nbr)
            hops.append((nodes.size, src, dst, w))
            nodes = node_ids
        blocks, num_src = [], nodes.size
        for num_dst, src, dst, w in reversed(hops):
            blocks.append(SampledBlock(node_ids=nodes[:num_src], src=src, dst=dst,
                                       num_dst=num_dst, edge_ids=np.zeros(src.size, np.int64),
                                       edge_weight=w))
            num_src = num_dst
        return blocks, partial

    # ------------------------------------------------------------- rows from owners

    def fetch_rows(self, ids: np.ndarray, kind: str,
                   table: torch.Tensor | None = None) -> torch.Tensor | None:
        """Rows of ``table`` (default: the features; any ``(n_local, D)`` per-rank table) for
        global ``ids``, owned ones read locally, the others asked of their owners."""
        local_table = table if table is not None else (
            None if self.shard.x is None else torch.from_numpy(self.shard.x))
        if local_table is None:
            return None
        owner = self.parts[ids]
        sel = [np.flatnonzero(owner == r) for r in range(self.world)]
        asks = self.ex.exchange([torch.from_numpy(ids[s].astype(self.id_dtype)) for s in sel],
                                "structure", f"{kind}-requests")
        replies = [local_table.index_select(0, torch.from_numpy(
            self.shard.local_index(a.numpy().astype(np.int64)))) for a in asks]
        got = self.ex.exchange(replies, kind, f"{kind}-rows")
        out = torch.empty((ids.size, local_table.shape[1]), dtype=local_table.dtype)
        for s, rows in zip(sel, got, strict=True):
            out[torch.from_numpy(s)] = rows
        return out

    def _load_cache_rows(self, slots: np.ndarray) -> None:
        """Fetch the cached rows among ``slots`` that no batch has read yet (every rank takes
        part in the round, with nothing to ask when all are loaded)."""
        if not self.gns:
            return
        need = np.unique(slots[self.cache.missing(slots)])
        rows = self.fetch_rows(self.cache.ids[need], "cache")
        if rows is not None and need.size:
            self.cache.fill(need, rows)
            self.ledger.charge("cache", self.cache.ids.nbytes + self.cache.loaded_bytes())

    def input_rows(self, input_ids: np.ndarray) -> tuple[torch.Tensor | None, int, int]:
        """Features of a batch's input nodes: ``(rows, cache hits, remote fetches)``; owned rows
        cost no communication, cached rows only the first time a batch of the period reads them
        (counted as ``cache`` bytes)."""
        if self.shard.x is None:
            return None, 0, 0
        out = torch.empty((input_ids.size, self.shard.x.shape[1]), dtype=torch.float32)
        owned = self.parts[input_ids] == self.rank
        slot = self.cache.slots(input_ids)
        hit = (slot >= 0) & ~owned
        self._load_cache_rows(slot[hit])
        if owned.any():
            out[torch.from_numpy(owned)] = torch.from_numpy(
                self.shard.x[self.shard.local_index(input_ids[owned])])
        if hit.any() and self.cache.x is not None:
            out[torch.from_numpy(hit)] = self.cache.x[torch.from_numpy(slot[hit])]
        miss = ~owned & ~hit
        fetched = self.fetch_rows(input_ids[miss], "features")
        if fetched is not None and miss.any():
            out[torch.from_numpy(miss)] = fetched
        self.ledger.charge("batch-rows", out.numel() * 4)
        return out, int(hit.sum()), int(miss.sum())
