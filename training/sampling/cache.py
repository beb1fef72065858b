"""GNS's global node cache: drawn with probability proportional to degree, with known inclusion
probabilities, plus the in-neighbour lists restricted to it.

Draw (Poisson sampling, i.e. each node independently, so without replacement): node ``u`` enters
with probability ``pi_u = min(1, lam · deg_u)``, ``lam`` chosen so that ``sum_u pi_u`` equals the
target size ``round(fraction · |V|)`` (nodes whose share would exceed 1 are capped at 1 and the
rest rescaled). ``deg_u`` is the out-degree, the number of in-neighbour lists ``u`` appears in, so
every node that can be sampled as a neighbour has ``pi_u > 0``. The size is random with mean the
target and variance ``sum pi (1 - pi)`` (below the target); in exchange ``pi_u`` is exact and the
probability that the cache misses all in-neighbours of ``v`` has the closed form
``q_v = prod_{u in N(v)} (1 - pi_u)``, which is what makes the GNS estimator exactly unbiased
(docs/gns.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from qgnn.graph.container import Adjacency

DRAW_CHUNK = 1 << 22  # uniforms drawn per step (32 MB of float64)
SEGMENT_CHUNK = 1 << 23  # edges gathered per step when reducing over in-neighbour lists


def inclusion_probabilities(degree: np.ndarray, expected_size: float) -> np.ndarray:
    """``(N,)`` float64 ``pi = min(1, lam · degree)`` with ``sum(pi) == expected_size``.

    Nodes of degree 0 get 0. When ``expected_size`` reaches the number of nodes of positive
    degree, all of them get 1.
    """
    deg = np.asarray(degree, dtype=np.float64)
    if deg.ndim != 1 or (deg < 0).any():
        raise ValueError("inclusion_probabilities.degree: expected a 1-D array of degrees >= 0")
    if not expected_size > 0:
        raise ValueError(f"inclusion_probabilities.expected_size: expected > 0, got "
                         f"{expected_size!r}")
    positive = deg > 0
    if expected_size >= int(positive.sum()):
        return positive.astype(np.float64)
    capped = np.zeros(deg.size, np.bool_)
    while True:  # each round caps more nodes; a handful of rounds on power-law degrees
        lam = (expected_size - capped.sum()) / deg[~capped].sum()
        over = ~capped & (deg * lam >= 1.0)
        if not over.any():
            break
        capped |= over
    return np.where(capped, 1.0, deg * lam)


def draw_cache(inclusion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted node ids, node ``u`` kept independently with probability ``inclusion[u]``."""
    kept = [np.zeros(0, np.int64)]
    for start in range(0, inclusion.size, DRAW_CHUNK):
        part = inclusion[start:start + DRAW_CHUNK]
        kept.append(np.flatnonzero(rng.random(part.size) < part) + start)
    return np.concatenate(kept)


def restrict_to_cache(csc: Adjacency, in_cache: np.ndarray) -> Adjacency:
    """Every node's in-neighbour list cut down to cached sources (edge order kept).

    Vectorised over the whole CSC: one boolean gather over the edges, the kept positions, and the
    new ``indptr`` from a binary search of the old one into them.
    """
    kept = np.flatnonzero(in_cache[csc.indices])
    indptr = np.searchsorted(kept, csc.indptr).astype(np.int64)
    return Adjacency(indptr, csc.indices[kept], csc.edge_ids[kept])


def segment_sum(indptr: np.ndarray, indices: np.ndarray, node_values: np.ndarray, *,
                distinct: bool = False) -> np.ndarray:
    """``out[v] = sum(node_values[indices[indptr[v]:indptr[v+1]]])`` in float64, gathering at
    most about ``SEGMENT_CHUNK`` edges at a time (a hub's whole list in one step).

    ``distinct=True`` counts a repeated index of a row once; it needs each row's indices sorted,
    as the graph's CSC view keeps them (duplicates are then adjacent).
    """
    rows = indptr.size - 1
    out = np.zeros(rows, np.float64)
    cuts = np.searchsorted(indptr, np.arange(0, int(indptr[-1]), SEGMENT_CHUNK), side="right") - 1
    bounds = np.unique(np.concatenate([[0], np.clip(cuts, 0, rows), [rows]]))
    for lo, hi in itertools.pairwise(bounds.tolist()):
        start, stop = int(indptr[lo]), int(indptr[hi])
        idx = indices[start:stop]
        vals = node_values[idx]
        local = indptr[lo:hi + 1] - start
        if distinct and idx.size:
            repeat = np.zeros(idx.size, np.bool_)
            np.equal(idx[1:], idx[:-1], out=repeat[1:])
            repeat[local[:-1][local[:-1] < idx.size]] = False  # a row's first entry is new
            vals[repeat] = 0.0
        total = np.zeros(stop - start + 1, np.float64)
        np.cumsum(vals, out=total[1:])
        out[lo:hi] = total[local[1:]] - total[local[:-1]]
    return out


def miss_probability(csc: Adjacency, inclusion: np.ndarray) -> np.ndarray:
    """``q_v = prod_{u in N(v)} (1 - pi_u)`` over the *distinct* in-neighbours of ``v``: the
    chance the cache holds none of them, ``(N,)`` float64 (1 for nodes without in-edges)."""
    certain = inclusion >= 1.0
    log_keep = np.log1p(-np.where(certain, 0.0, inclusion))
    log_q = segment_sum(csc.indptr, csc.indices, log_keep, distinct=True)
    any_certain = segment_sum(csc.indptr, csc.indices, certain.astype(np.float64)) > 0
    return np.where(any_certain, 0.0, np.exp(log_q))


@dataclass(frozen=True, eq=False)
class NodeCache:
    """One cache draw: its nodes, their slots, the cache-restricted in-neighbour lists and
    (once loaded) their features resident on the compute device."""

    node_ids: np.ndarray  # (m,) int64 sorted global ids
    slot: np.ndarray  # (N,) int64: position in node_ids, -1 when not cached
    adjacency: Adjacency  # in-neighbours restricted to cached sources
    features: torch.Tensor | None = None  # (m, F) on the compute device

    @property
    def size(self) -> int:
        return int(self.node_ids.size)


def build_cache(csc: Adjacency, node_ids: np.ndarray) -> NodeCache:
    """The lookup structures for a drawn set of cached nodes (features not loaded yet)."""
    n = csc.indptr.size - 1
    slot = np.full(n, -1, np.int64)
    slot[node_ids] = np.arange(node_ids.size, dtype=np.int64)
    return NodeCache(node_ids=node_ids, slot=slot, adjacency=restrict_to_cache(csc, slot >= 0))
