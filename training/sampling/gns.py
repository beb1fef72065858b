"""Global Neighbor Sampling (Dong, Zheng, Yang & Karypis, KDD 2021, arXiv:2106.06150).

A cache of about ``fraction · |V|`` nodes is drawn with probability proportional to degree
before an epoch (every ``refresh_period`` epochs) and its features are kept on the compute
device. The hops above the input layer are sampled uniformly (GraphSAGE); the input layer, whose
sources are the only nodes whose *features* are read, takes its neighbours from the cache:

- destination ``v`` with at least one cached in-neighbour (``c_v >= 1``): up to ``fanout`` of
  its ``c_v`` cached in-neighbours, uniformly without replacement, each with the sum-form
  importance weight ``w_uv = (1 - q_v) · (c_v / n_v) / pi_u``;
- otherwise it falls back to uniform sampling from its full in-neighbourhood, ``w = d_v / n_v``.

``pi_u`` is ``u``'s cache inclusion probability, ``q_v = prod_{u in N(v)} (1 - pi_u)`` the
chance the cache holds none of ``v``'s in-neighbours and ``n_v`` the number drawn. Over the joint
randomness of the cache draw and the neighbour draw, ``sum_{u in S(v)} w_uv x_u`` is an unbiased
estimate of ``sum_{u in N(v)} x_u`` (derivation in docs/gns.md; tested statistically). Two other
estimators trade differently: ``normalized`` rescales those weights per destination (biased,
far less variance) and ``stratified`` adds a few non-cached draws, unbiased for every cache.
The cached lists come from a per-refresh CSR of in-neighbours restricted to the cache
(:func:`qgnn.training.sampling.cache.restrict_to_cache`); nothing loops over nodes in Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qgnn.graph.container import Adjacency
from qgnn.graph.neighbourhood import SampledBlock, khop_blocks, sample_neighbors
from qgnn.training.sampling.cache import (
    NodeCache,
    build_cache,
    draw_cache,
    inclusion_probabilities,
    miss_probability,
)
from qgnn.training.sampling.config import (
    DEFAULT_UNCACHED_FANOUT,
    ESTIMATORS,
    GNS_LAYERS,
    Estimator,
    GnsLayers,
    check_fanouts,
)


def relabel(dst_nodes: np.ndarray, nbr: np.ndarray,
            scratch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local ids for sampled neighbours: ``(node_ids, src)`` where ``node_ids`` starts with the
    (distinct) ``dst_nodes`` followed by the other sampled ids (each once, in the order of its
    last appearance in ``nbr``), and ``node_ids[src] == nbr``. ``scratch`` is an int64 array
    over all nodes whose contents never matter: an entry is trusted only where it points back at
    its node (a sparse set), so nothing is cleared and no sort or hash is needed."""
    num_dst = dst_nodes.size
    scratch[dst_nodes] = np.arange(num_dst, dtype=np.int64)
    known = (dst_nodes.take(scratch.take(nbr), mode="clip") == nbr if num_dst
             else np.zeros(nbr.size, np.bool_))
    cand = nbr[~known]
    pos = np.arange(cand.size, dtype=np.int64)
    scratch[cand] = pos  # repeated ids: the last write wins, naming one representative
    new = cand[scratch.take(cand) == pos]
    scratch[new] = num_dst + np.arange(new.size, dtype=np.int64)
    return np.concatenate([dst_nodes, new]), scratch.take(nbr)


def _merge_by_destination(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate ``(dst, nbr, edge_id, weight)`` parts, each grouped by non-decreasing local
    ``dst``, into one list grouped by ``dst``; within a destination, earlier parts come first
    (a stable merge of sorted runs)."""
    dst, nbr, eids, weight = (np.concatenate([p[i] for p in parts]) for i in range(4))
    order = np.argsort(dst, kind="stable")
    return dst[order], nbr[order], eids[order], weight[order]


def sample_input_layer(csc: Adjacency, cache: NodeCache, inclusion: np.ndarray,
                       miss: np.ndarray, dst_nodes: np.ndarray, fanout: int,
                       rng: np.random.Generator, scratch: np.ndarray,
                       estimator: Estimator = "unbiased",
                       uncached_fanout: int = DEFAULT_UNCACHED_FANOUT) -> SampledBlock:
    """The input block of GNS for ``dst_nodes`` (distinct global ids), sum-form weights.

    Destinations with no cached in-neighbour fall back to uniform sampling of ``fanout`` from
    the full neighbourhood. The others draw up to ``fanout`` of their cached in-neighbours and,
    by ``estimator`` (docs/gns.md):

    - ``"unbiased"``: nothing else; Horvitz-Thompson weights over the cache draw.
    - ``"normalized"``: the same draw, weights rescaled per destination to sum to its in-degree
      (the ratio, or Hajek, estimator: biased, bounded, lower variance).
    - ``"stratified"``: also ``uncached_fanout`` uniform draws from the full neighbourhood, of
      which the non-cached ones are kept: the cached and the non-cached part of the
      neighbourhood are each estimated by their own uniform sample, which is unbiased given
      the cache (no ``1 / pi`` weights) at the price of a few non-cached rows.

    Edges come out grouped by destination in ``dst_nodes`` order (cache draws before the
    non-cached ones), like :func:`khop_blocks`.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"GNS estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    num_dst = dst_nodes.size
    cached_deg = cache.adjacency.indptr[dst_nodes + 1] - cache.adjacency.indptr[dst_nodes]
    full_deg = csc.indptr[dst_nodes + 1] - csc.indptr[dst_nodes]
    from_cache = cached_deg > 0
    rows_c, rows_f = np.flatnonzero(from_cache), np.flatnonzero(~from_cache)
    nbr_c, pos_c, eid_c = sample_neighbors(cache.adjacency, dst_nodes[rows_c], fanout, rng)
    nbr_f, pos_f, eid_f = sample_neighbors(csc, dst_nodes[rows_f], fanout, rng)
    dst_c, dst_f = rows_c[pos_c], rows_f[pos_f]
    drawn = np.bincount(dst_c, minlength=num_dst) + np.bincount(dst_f, minlength=num_dst)
    if estimator == "stratified":
        w_c = (cached_deg / np.maximum(drawn, 1))[dst_c]
    else:
        w_c = ((1.0 - miss[dst_nodes[dst_c]]) * cached_deg[dst_c] / drawn[dst_c]
               / inclusion[nbr_c])
    parts = [(dst_c, nbr_c, eid_c, w_c),
             (dst_f, nbr_f, eid_f, full_deg[dst_f] / drawn[dst_f])]
    if estimator == "stratified" and rows_c.size:
        nbr_u, pos_u, eid_u = sample_neighbors(csc, dst_nodes[rows_c], uncached_fanout, rng)
        dst_u = rows_c[pos_u]
        drawn_u = np.bincount(dst_u, minlength=num_dst)
        keep = cache.slot[nbr_u] < 0
        dst_u = dst_u[keep]
        parts.append((dst_u, nbr_u[keep], eid_u[keep], full_deg[dst_u] / drawn_u[dst_u]))
    dst, nbr, eids, weight = _merge_by_destination(parts)
    if estimator == "normalized":
        total = np.bincount(dst, weights=weight, minlength=num_dst)
        weight *= (full_deg / np.where(total > 0, total, 1.0))[dst]
    node_ids, src = relabel(dst_nodes, nbr, scratch)
    return SampledBlock(node_ids=node_ids, src=src, dst=dst, num_dst=num_dst, edge_ids=eids,
                        edge_weight=weight.astype(np.float32))


class GNSSampler:
    """Uniform sampling above the input layer, cache-restricted sampling in it; with
    ``layers="all"`` every hop draws from the cache the same way, so the upper layers' nodes,
    which are also input-layer sources, are mostly cached too (fewer feature bytes, more
    variance: docs/gns.md).

    ``refresh(rng)`` draws a new cache (call it before an epoch); ``sample`` needs one.
    Inclusion probabilities and miss probabilities depend only on the graph and the cache
    fraction, so they are computed once here.
    """

    def __init__(self, csc: Adjacency, fanouts: Sequence[int], cache_fraction: float,
                 out_degree: np.ndarray, estimator: Estimator = "unbiased",
                 layers: GnsLayers = "input",
                 uncached_fanout: int = DEFAULT_UNCACHED_FANOUT) -> None:
        self.csc = csc
        self.fanouts = check_fanouts(tuple(fanouts))
        if estimator not in ESTIMATORS:
            raise ValueError(f"GNSSampler.estimator: expected one of {ESTIMATORS}, got "
                             f"{estimator!r}")
        self.estimator = estimator
        if layers not in GNS_LAYERS:
            raise ValueError(f"GNSSampler.layers: expected one of {GNS_LAYERS}, got {layers!r}")
        self.layers = layers
        if isinstance(uncached_fanout, bool) or not isinstance(uncached_fanout, int) \
                or uncached_fanout < 1:
            raise ValueError(f"GNSSampler.uncached_fanout: expected an int >= 1, got "
                             f"{uncached_fanout!r}")
        self.uncached_fanout = uncached_fanout
        if not 0.0 < cache_fraction <= 1.0:
            raise ValueError(f"GNSSampler.cache_fraction: expected a fraction in (0, 1], got "
                             f"{cache_fraction!r}")
        n = self.num_nodes
        if out_degree.shape != (n,):
            raise ValueError(f"GNSSampler.out_degree: expected shape ({n},), got "
                             f"{out_degree.shape}")
        self.target_size = max(1, round(cache_fraction * n))
        self.inclusion = inclusion_probabilities(out_degree, self.target_size)
        self.miss = miss_probability(csc, self.inclusion)
        self.cache: NodeCache | None = None

    @property
    def num_nodes(self) -> int:
        return int(self.csc.indptr.size - 1)

    def refresh(self, rng: np.random.Generator) -> NodeCache:
        self.cache = build_cache(self.csc, draw_cache(self.inclusion, rng))
        return self.cache

    def sample(self, seeds: np.ndarray, rng: np.random.Generator,
               scratch: np.ndarray) -> list[SampledBlock]:
        """L blocks for distinct ``seeds``, input layer first."""
        if self.cache is None:
            raise RuntimeError("GNSSampler.sample: no cache yet; call refresh(rng) first")
        dst_nodes = np.asarray(seeds, dtype=np.int64)
        if (len(self.fanouts) == 1 or self.layers == "all") and \
                np.unique(dst_nodes).size != dst_nodes.size:
            raise ValueError("GNSSampler.sample.seeds: seeds must be distinct")
        if self.layers == "all":
            blocks = []
            for fanout in self.fanouts:
                block = sample_input_layer(self.csc, self.cache, self.inclusion, self.miss,
                                           dst_nodes, fanout, rng, scratch, self.estimator,
                                           self.uncached_fanout)
                blocks.append(block)
                dst_nodes = block.node_ids
            return blocks[::-1]
        outer: list[SampledBlock] = []
        if len(self.fanouts) > 1:
            outer = khop_blocks(self.csc, dst_nodes, self.fanouts[:-1], seed=rng,
                                scratch=scratch)
            dst_nodes = outer[0].node_ids
        first = sample_input_layer(self.csc, self.cache, self.inclusion, self.miss, dst_nodes,
                                   self.fanouts[-1], rng, scratch, self.estimator,
                                   self.uncached_fanout)
        return [first, *outer]
