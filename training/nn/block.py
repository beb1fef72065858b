"""Message-passing structure on torch: one bipartite block per layer.

A block sends messages from ``num_src`` source nodes to ``num_dst`` destination nodes. The
destinations are the first ``num_dst`` sources (so ``x_dst = x_src[:num_dst]``), the convention of
sampled L-hop blocks where the seeds come last in the chain and first in each node list. The full
graph is the block with ``num_src == num_dst == N``. Blocks built by qgnn have edges sorted by
destination (what the exporter's segmented reductions need); torch aggregation does not rely on it,
so layers may append self-loops at the end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from qgnn.graph.container import Graph


@dataclass(frozen=True, eq=False)
class Block:
    src: torch.Tensor  # (E,) int64, local source index
    dst: torch.Tensor  # (E,) int64, local destination index
    num_src: int
    num_dst: int
    edge_weight: torch.Tensor | None = None  # (E,) float: given weights or importance weights
    src_ids: torch.Tensor | None = None  # (num_src,) global ids, for degree lookups
    in_degree: torch.Tensor | None = None  # (num_src,) full-graph in-degree of each source
    protect: torch.Tensor | None = None  # (num_src,) bool: Degree-Quant protection this pass

    @property
    def num_edges(self) -> int:
        return int(self.src.numel())

    def replace(self, **changes: object) -> Block:
        """A copy with ``changes``. A copy that only changes ``protect`` (Degree-Quant draws a
        mask per pass) has the same edges, so it shares :meth:`cache`: the looped block, the
        :mod:`spmm` plan and the like are built once, not once per pass."""
        new = dataclasses.replace(self, **changes)
        if changes.keys() <= {"protect"}:
            new.__dict__["_cache"] = self.cache()
        return new

    def cache(self) -> dict[str, object]:
        """What is derived from the block's structure (edges, sizes, weights), never from
        ``protect``; filled on first use by the modules that need it."""
        return self.__dict__.setdefault("_cache", {})

    def dst_degree(self) -> torch.Tensor:
        """In-degree of each destination within this block."""
        return torch.bincount(self.dst, minlength=self.num_dst)

    def protect_edges(self) -> torch.Tensor | None:
        """Edges whose source is protected run in full precision (Degree-Quant). Built once
        per block: every edge site of a layer asks for it each pass."""
        if self.protect is None:
            return None
        edges = self.__dict__.get("_protect_edges")
        if edges is None:
            edges = self.__dict__["_protect_edges"] = self.protect[self.src]
        return edges

    def protect_dst(self) -> torch.Tensor | None:
        return None if self.protect is None else self.protect[: self.num_dst]

    def with_self_loops(self, fill: float = 1.0) -> Block:
        """Append an edge (i, i) for every destination; loops carry weight ``fill``. Cached
        on the (immutable) block, so a layer that loops the same block every pass reuses one
        looped block (and its :mod:`spmm` plan); the loops keep ``protect``."""
        cached = self.cache().setdefault("looped", {})
        assert isinstance(cached, dict)
        if fill not in cached:
            cached[fill] = self._looped(fill).replace(protect=None)
        looped = cached[fill]
        return looped if self.protect is None else looped.replace(protect=self.protect)

    def _looped(self, fill: float) -> Block:
        loops = torch.arange(self.num_dst, device=self.src.device)
        weight = None
        if self.edge_weight is not None:
            weight = torch.cat([self.edge_weight, self.edge_weight.new_full((self.num_dst,), fill)])
        return self.replace(src=torch.cat([self.src, loops]), dst=torch.cat([self.dst, loops]),
                            edge_weight=weight)

    def src_in_degree(self) -> torch.Tensor:
        """Full-graph in-degree of each source when known, else the in-degree within the block."""
        if self.in_degree is not None:
            return self.in_degree
        return torch.bincount(self.dst, minlength=self.num_src)

    def to(self, device: torch.device | str) -> Block:
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=True)
                 for f in dataclasses.fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return self.replace(**moved)


def full_graph_block(graph: Graph, *, self_loops: bool = False) -> Block:
    """The whole graph as one block, edges sorted by destination (from the cached CSC view)."""
    csc = graph.csc
    n = graph.num_nodes
    dst = np.repeat(np.arange(n, dtype=np.int64), np.diff(csc.indptr))
    src = csc.indices
    weight = None if graph.edge_weight is None else graph.edge_weight[csc.edge_ids]
    if self_loops:
        src, dst, weight = add_self_loops(src, dst, n, weight)
    in_deg = np.diff(csc.indptr)
    return Block(src=torch.from_numpy(np.ascontiguousarray(src)),
                 dst=torch.from_numpy(np.ascontiguousarray(dst)), num_src=n, num_dst=n,
                 edge_weight=None if weight is None else torch.from_numpy(
                     np.ascontiguousarray(weight, dtype=np.float32)),
                 src_ids=torch.arange(n), in_degree=torch.from_numpy(in_deg))


def add_self_loops(src: np.ndarray, dst: np.ndarray, n: int, weight: np.ndarray | None = None,
                   fill: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Append (i, i) for every destination i < n, keeping destination order."""
    loops = np.arange(n, dtype=np.int64)
    s, d = np.concatenate([src, loops]), np.concatenate([dst, loops])
    order = np.argsort(d, kind="stable")
    w = None
    if weight is not None:
        w = np.concatenate([weight, np.full(n, fill, weight.dtype)])[order]
    return s[order], d[order], w
