"""Graphs and blocks shared by the layer tests: a hand-made graph, a Cora-sized random graph, and
sampled bipartite blocks cut from either."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import Block

BlockMaker = Callable[..., Block]


@pytest.fixture
def tiny() -> tuple[Graph, torch.Tensor]:
    """5 nodes, 6 edges; nodes 3 and 4 have no in-edges (empty destinations)."""
    src = np.array([0, 2, 1, 3, 0, 4])
    dst = np.array([1, 1, 0, 0, 2, 2])
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    return Graph.from_edges(src, dst, 5), x


@pytest.fixture(scope="session")
def cora_like() -> tuple[Graph, torch.Tensor]:
    """2708 nodes, ~10.5k directed edges (symmetric, no self-loops), 32 random features."""
    rng = np.random.default_rng(0)
    n = 2708
    src, dst = rng.integers(0, n, 5400), rng.integers(0, n, 5400)
    keep = src != dst
    graph = Graph.from_edges(src[keep], dst[keep], n).to_undirected()
    x = torch.from_numpy(rng.standard_normal((n, 32)).astype(np.float32))
    return graph, x


def _neighbour_block(graph: Graph, seeds: np.ndarray, keep: float = 1.0,
                     seed: int = 0) -> Block:
    """The block from ``seeds`` (destinations, listed first among sources) back to their
    in-neighbours; ``keep < 1`` drops each in-edge with probability ``1 - keep`` like a sampler.
    Sources carry their full-graph in-degree."""
    csc, n_dst = graph.csc, len(seeds)
    counts = csc.degree()[seeds]
    first = np.repeat(csc.indptr[seeds] - np.cumsum(counts) + counts, counts)
    src_global = csc.indices[first + np.arange(counts.sum())]
    dst = np.repeat(np.arange(n_dst), counts)
    mask = np.random.default_rng(seed).random(dst.size) < keep
    src_global, dst = src_global[mask], dst[mask]
    nodes = np.concatenate([seeds, np.setdiff1d(np.unique(src_global), seeds)])
    local = np.full(graph.num_nodes, -1, np.int64)
    local[nodes] = np.arange(nodes.size)
    return Block(src=torch.from_numpy(local[src_global]), dst=torch.from_numpy(dst),
                 num_src=int(nodes.size), num_dst=n_dst, src_ids=torch.from_numpy(nodes),
                 in_degree=torch.from_numpy(graph.in_degree()[nodes]))


@pytest.fixture
def neighbour_block() -> BlockMaker:
    return _neighbour_block


@pytest.fixture
def layer_blocks() -> Callable[[Graph, np.ndarray, int], list[Block]]:
    """Per-layer blocks for an L-layer model on ``seeds``, outermost first (full neighbourhoods)."""
    def make(graph: Graph, seeds: np.ndarray, num_layers: int) -> list[Block]:
        blocks: list[Block] = []
        for _ in range(num_layers):
            block = _neighbour_block(graph, seeds)
            blocks.insert(0, block)
            seeds = block.src_ids.numpy()
        return blocks
    return make
