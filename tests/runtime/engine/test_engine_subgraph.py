"""k-hop extraction against qgnn.graph.neighbourhood.full_khop (an independent sampler)."""

from __future__ import annotations

import engine_testkit as tk
import numpy as np
import pytest
from qgnn.graph.container import Graph
from qgnn.graph.neighbourhood import full_khop
from qgnn.runtime.engine.store import FeatureCodec, GraphStore
from qgnn.runtime.engine.subgraph import Extractor


def _edges(node_ids: np.ndarray, layer) -> list[tuple[int, int]]:
    dst = np.repeat(np.arange(layer.num_dst), np.diff(layer.indptr))
    return sorted(zip(node_ids[layer.src].tolist(), node_ids[dst].tolist(), strict=True))


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_full_neighbourhoods_match_full_khop(hops: int) -> None:
    n = 50
    src, dst = tk.random_graph(n, 150, seed=8)
    in_ptr, in_idx = tk.in_csr(src, dst, n)
    out_ptr, out_idx = tk.out_csr(src, dst, n)
    store = GraphStore(in_ptr, in_idx, out_ptr, out_idx, np.zeros((n, 1), np.float32),
                       FeatureCodec(np.dtype(np.float32)), caps=[-1] * hops)
    seeds = np.array([4, 31, 0])
    sub = Extractor().extract(store.snapshot(), seeds, [-1] * hops)
    blocks = full_khop(Graph.from_edges(src, dst, n).csc, seeds, hops)
    np.testing.assert_array_equal(sub.node_ids[:3], seeds)
    assert len(sub.layers) == hops
    for layer, block in zip(sub.layers, blocks, strict=True):
        assert (layer.num_src, layer.num_dst) == (block.num_src, block.num_dst)
        assert set(sub.node_ids[:layer.num_src]) == set(block.node_ids.tolist())
        assert set(sub.node_ids[:layer.num_dst]) == set(block.node_ids[:block.num_dst].tolist())
        expected = sorted(zip(block.node_ids[block.src].tolist(),
                              block.node_ids[block.dst].tolist(), strict=True))
        assert _edges(sub.node_ids, layer) == expected
        assert layer.indptr[0] == 0 and layer.indptr[-1] == layer.num_edges
        assert layer.src.dtype == np.int64 and layer.indptr.dtype == np.int64


def test_capped_layers_and_prefix_layout() -> None:
    n = 60
    src, dst = tk.random_graph(n, 600, seed=9, hub=2)
    in_ptr, in_idx = tk.in_csr(src, dst, n)
    out_ptr, out_idx = tk.out_csr(src, dst, n)
    store = GraphStore(in_ptr, in_idx, out_ptr, out_idx, np.zeros((n, 1), np.float32),
                       FeatureCodec(np.dtype(np.float32)), caps=(4, 2), seed=1)
    snap = store.snapshot()
    extractor = Extractor()
    sub = extractor.extract(snap, np.array([2, 10]), (4, 2))
    last, first = sub.layers[1], sub.layers[0]
    assert last.num_dst == 2 and np.diff(last.indptr).max() <= 4
    assert first.num_dst == last.num_src and np.diff(first.indptr).max() <= 2
    assert first.num_src == sub.node_ids.size == np.unique(sub.node_ids).size
    # every listed edge exists in the graph, and each node's sample is the store's
    edges = set(zip(src.tolist(), dst.tolist(), strict=True))
    assert all(e in edges for e in _edges(sub.node_ids, first) + _edges(sub.node_ids, last))
    for layer, cap in ((last, 4), (first, 2)):
        counts, values = snap.in_neighbours(sub.node_ids[:layer.num_dst], cap)
        np.testing.assert_array_equal(sub.node_ids[layer.src], values)
        np.testing.assert_array_equal(np.diff(layer.indptr), counts)
    # the same request again (the scratch array is reused) gives the same subgraph
    again = extractor.extract(snap, np.array([2, 10]), (4, 2))
    np.testing.assert_array_equal(again.node_ids, sub.node_ids)
    for a, b in zip(again.layers, sub.layers, strict=True):
        np.testing.assert_array_equal(a.src, b.src)
