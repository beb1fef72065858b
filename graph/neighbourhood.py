"""Vectorised neighbourhood sampling over CSR adjacency (numpy only).

Used by training's mini-batch samplers and by the torch-free runtime. ``sample_neighbors`` draws up
to ``fanout`` in-neighbours per seed without a per-seed Python loop and at a cost independent of a
hub's degree; ``khop_blocks`` chains it into L message-passing blocks whose node lists share one
prefix-ordered relabelling (the destinations of every block are the first sources).

Seeds of degree ``d <= fanout`` keep every neighbour; the others get a uniform ``fanout``-subset
from Floyd's algorithm run for all of them at once: ``fanout`` vectorised steps, O(fanout²) work
per seed whatever its degree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qgnn.graph.container import Adjacency

RngLike = int | np.random.Generator | None
FLOYD_FLAT_STEPS = 16  # Floyd steps whose membership test runs as k flat comparisons


@dataclass(frozen=True, eq=False)
class SampledBlock:
    """One message-passing layer of a sampled (or exact) neighbourhood.

    ``node_ids[:num_dst]`` are the destinations, in order; ``src``/``dst`` index ``node_ids``
    and edges are grouped by ``dst`` in ascending order. ``edge_ids`` index the graph's CSR edge
    order so per-edge data can be gathered. ``edge_weight`` holds the importance weight
    ``degree(dst) / sampled(dst)`` (so ``sum_j w_ij m_j`` estimates the full-neighbourhood sum
    without bias); it is ``None`` when the block holds full neighbourhoods.
    """

    node_ids: np.ndarray  # (num_src,) int64 global ids, destinations first
    src: np.ndarray  # (E,) int64 local source index
    dst: np.ndarray  # (E,) int64 local destination index, non-decreasing
    num_dst: int
    edge_ids: np.ndarray  # (E,) int64 positions in the graph's CSR edge order
    edge_weight: np.ndarray | None = None  # (E,) float32 importance weights

    @property
    def num_src(self) -> int:
        return int(self.node_ids.size)

    @property
    def num_edges(self) -> int:
        return int(self.src.size)


def _check_fanout(name: str, fanout: Any) -> int:
    if isinstance(fanout, bool) or not isinstance(fanout, int | np.integer):
        raise ValueError(f"{name}: expected an int (>= 1, or -1 for all), got {fanout!r}")
    if fanout != -1 and fanout < 1:
        raise ValueError(f"{name}: must be >= 1 or -1 (all neighbours), got {int(fanout)}")
    return int(fanout)


def _check_seeds(name: str, seeds: Any, num_rows: int) -> np.ndarray:
    arr = np.asarray(seeds)
    if arr.ndim != 1 or arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected a 1-D integer array of node ids, got shape "
                         f"{arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= num_rows):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ValueError(f"{name}: node id {bad} out of range [0, {num_rows})")
    return arr


def _segment_offsets(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segments of the given lengths: (start of each segment, offset of each item in its
    segment), both vectorised."""
    ends = np.cumsum(counts)
    starts = ends - counts
    within = np.arange(int(ends[-1]) if ends.size else 0, dtype=np.int64)
    within -= np.repeat(starts, counts)
    return starts, within


def _offsets_floyd(deg: np.ndarray, fanout: int, rng: np.random.Generator) -> np.ndarray:
    """(n, fanout) distinct offsets in ``[0, deg)`` (every ``deg > fanout``), uniform over
    subsets: Floyd's algorithm (Bentley & Floyd 1987, CACM 30(9)) run for all rows at once. Step
    ``k`` draws ``t`` uniform in ``[0, j]`` with ``j = deg - fanout + k`` and keeps ``t``, or ``j``
    when ``t`` was already taken; cost O(fanout²) per row, independent of the degree."""
    u = rng.random((fanout, deg.size))
    chosen = np.empty((fanout, deg.size), np.int64)  # one contiguous row per step
    taken = np.empty(deg.size, np.bool_)
    hit = np.empty(deg.size, np.bool_)
    for k in range(fanout):
        j = deg - fanout + k
        t = (u[k] * (j + 1)).astype(np.int64)
        np.minimum(t, j, out=t)
        if k <= FLOYD_FLAT_STEPS:  # k flat comparisons beat one (k, n) reduction for small k
            taken.fill(False)
            for prev in chosen[:k]:
                np.equal(prev, t, out=hit)
                taken |= hit
        else:
            taken = (chosen[:k] == t).any(axis=0)
        np.copyto(t, j, where=taken)
        chosen[k] = t
    return chosen.T


def _sample_slots(indptr: np.ndarray, seeds: np.ndarray, fanout: int, rng: np.random.Generator,
                  replace: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjacency slots chosen per seed (grouped by seed), the number chosen per seed and each
    seed's degree."""
    start = indptr[seeds]
    deg = indptr[seeds + 1] - start
    if fanout == -1:
        count = deg
    elif replace:
        count = np.where(deg > 0, fanout, 0)
    else:
        count = np.minimum(deg, fanout)
    out_start, within = _segment_offsets(count)
    if fanout != -1 and replace:
        rows = np.flatnonzero(deg > 0)
        d = deg[rows, None]
        offs = np.minimum((rng.random((rows.size, fanout)) * d).astype(np.int64), d - 1)
        return (start[rows, None] + offs).reshape(-1), count, deg
    slots = np.repeat(start, count) + within
    if fanout == -1:
        return slots, count, deg
    rows = np.flatnonzero(deg > fanout)
    if rows.size:
        offs = _offsets_floyd(deg[rows], fanout, rng)
        slots[out_start[rows, None] + np.arange(fanout)] = start[rows, None] + offs
    return slots, count, deg


def sample_neighbors(adj: Adjacency, seeds: Any, fanout: int, rng: np.random.Generator, *,
                     replace: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample up to ``fanout`` neighbours (rows of ``adj``) of every seed, uniformly.

    Without replacement a seed of degree ``d`` gets ``min(d, fanout)`` distinct neighbours (all of
    them when ``d <= fanout``); with replacement ``fanout`` independent draws (none when ``d`` is
    0); ``fanout=-1`` takes every neighbour. Seeds may repeat (each is sampled independently).

    Returns ``(nbr_ids, seed_pos, edge_ids)``, all ``(E,)`` int64, grouped by seed in seed order
    (``seed_pos`` non-decreasing). Within a seed, whole neighbourhoods keep adjacency order;
    sampled ones come in draw order (sorting them would cost ~20% of the sampling time).
    """
    num_rows = adj.indptr.size - 1
    seeds = _check_seeds("sample_neighbors.seeds", seeds, num_rows)
    fanout = _check_fanout("sample_neighbors.fanout", fanout)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"sample_neighbors.rng: expected a numpy Generator, got "
                         f"{type(rng).__name__}")
    slots, count, _ = _sample_slots(adj.indptr, seeds, fanout, rng, replace)
    seed_pos = np.repeat(np.arange(seeds.size, dtype=np.int64), count)
    return adj.indices.take(slots), seed_pos, adj.edge_ids.take(slots)


def _check_scratch(scratch: Any, num_rows: int) -> np.ndarray:
    if scratch is None:
        return np.empty(num_rows, np.int64)
    if (not isinstance(scratch, np.ndarray) or scratch.dtype != np.int64 or scratch.ndim != 1
            or scratch.size < num_rows or not scratch.flags.writeable):
        shape = getattr(scratch, "shape", None)
        dtype = getattr(scratch, "dtype", type(scratch).__name__)
        raise ValueError(f"khop_blocks.scratch: expected a writable 1-D int64 array of at least "
                         f"{num_rows} entries, got shape {shape} dtype {dtype}")
    return scratch


def _append_new(nodes: np.ndarray, cand: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Append the ids in ``cand`` not yet in ``nodes`` (first-appearance order) and return the
    grown node list. ``scratch[v]`` is ``v``'s position in the list exactly when
    ``nodes[scratch[v]] == v`` (a sparse set), so the array never needs clearing."""
    n = nodes.size
    # A listed id's scratch entry is always its true position; for any other id the (clipped)
    # garbage position names a different node, so one comparison decides membership.
    known = nodes.take(scratch.take(cand), mode="clip") == cand
    new = cand.take(np.flatnonzero(~known))
    if not new.size:
        return nodes
    pos = np.arange(new.size, dtype=np.int64)
    scratch[new] = new.size
    np.minimum.at(scratch, new, pos)  # each new id -> its first position in ``new``
    first = new.take(np.flatnonzero(scratch.take(new) == pos))
    scratch[first] = n + np.arange(first.size, dtype=np.int64)
    return np.concatenate([nodes, first])


def khop_blocks(adj: Adjacency, seeds: Any, fanouts: Sequence[int], *, seed: RngLike = None,
                replace: bool = False, scratch: np.ndarray | None = None) -> list[SampledBlock]:
    """Sample an L-hop neighbourhood of ``seeds`` as L blocks, input layer first.

    ``fanouts[h]`` is the fanout of hop ``h + 1`` counted from the seeds (the PyG
    ``num_neighbors`` order), so the last block (the seeds' own) uses ``fanouts[0]``; ``-1`` takes
    full neighbourhoods. Every hop samples for all nodes reached so far, and new nodes are appended
    in first-appearance order, so each block's ``node_ids`` is a prefix of the next-outer one's
    and ``blocks[i + 1].node_ids == blocks[i].node_ids[:blocks[i].num_dst]``.

    ``seed`` (int, Generator or None) makes the draw deterministic. ``scratch`` is an optional
    reusable int64 work array of at least ``num_rows`` entries (its contents never matter; reuse
    one per thread to skip a per-call allocation on large graphs). Seeds must be distinct.
    """
    num_rows = adj.indptr.size - 1
    seeds = _check_seeds("khop_blocks.seeds", seeds, num_rows)
    if isinstance(fanouts, int | np.integer) or len(fanouts) == 0:
        raise ValueError(f"khop_blocks.fanouts: expected a non-empty sequence, got {fanouts!r}")
    fanouts = [_check_fanout(f"khop_blocks.fanouts[{h}]", f) for h, f in enumerate(fanouts)]
    scratch = _check_scratch(scratch, num_rows)
    rng = np.random.default_rng(seed)

    scratch[seeds] = np.arange(seeds.size, dtype=np.int64)
    clash = np.flatnonzero(scratch[seeds] != np.arange(seeds.size))
    if clash.size:
        raise ValueError(f"khop_blocks.seeds: node id {int(seeds[clash[0]])} appears more than "
                         f"once")
    nodes = seeds
    hops: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
    for fanout in fanouts:
        num_dst = nodes.size
        slots, count, deg = _sample_slots(adj.indptr, nodes, fanout, rng, replace)
        nbr = adj.indices.take(slots)
        dst = np.repeat(np.arange(num_dst, dtype=np.int64), count)
        weight = None
        if fanout != -1:
            ratio = np.divide(deg, count, out=np.zeros(num_dst), where=count > 0)
            weight = np.repeat(ratio.astype(np.float32), count)
        nodes = _append_new(nodes, nbr, scratch)
        hops.append((num_dst, scratch.take(nbr), dst, adj.edge_ids.take(slots), weight))
    blocks = []
    num_src = nodes.size
    for num_dst, src, dst, eids, weight in reversed(hops):
        blocks.append(SampledBlock(node_ids=nodes[:num_src], src=src, dst=dst, num_dst=num_dst,
                                   edge_ids=eids, edge_weight=weight))
        num_src = num_dst
    return blocks


def full_khop(adj: Adjacency, seeds: Any, num_hops: int, *,
              scratch: np.ndarray | None = None) -> list[SampledBlock]:
    """The exact ``num_hops``-hop in-neighbourhood of ``seeds`` as blocks (input layer first);
    ``edge_weight`` is ``None`` since nothing is sampled."""
    if isinstance(num_hops, bool) or not isinstance(num_hops, int | np.integer) or num_hops < 1:
        raise ValueError(f"full_khop.num_hops: expected an int >= 1, got {num_hops!r}")
    return khop_blocks(adj, seeds, [-1] * int(num_hops), scratch=scratch)
