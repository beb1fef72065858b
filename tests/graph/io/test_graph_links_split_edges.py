"""split_edges: held-out undirected pairs vanish from the graph in both directions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qgnn.graph.container import Graph
from qgnn.graph.io.planetoid import load_planetoid
from qgnn.graph.links import split_edges

DATA = Path(__file__).resolve().parents[3] / "data"


@pytest.fixture(scope="module")
def cora():
    return load_planetoid(DATA / "cora", "cora")


def _undirected_pairs(g: Graph) -> set[tuple[int, int]]:
    src, dst = g.edge_index()
    return {(min(a, b), max(a, b)) for a, b in zip(src.tolist(), dst.tolist(), strict=True)
            if a != b}


def test_partition_of_the_pairs(cora):
    data = split_edges(cora, val_fraction=0.05, test_fraction=0.1, seed=3)
    pairs = _undirected_pairs(cora)
    train, val, test = ({tuple(p) for p in a.tolist()} for a in (data.train, data.val,
                                                                   data.test))
    assert len(pairs) == 5278
    assert (len(val), len(test)) == (round(5278 * 0.05), round(5278 * 0.1))
    assert train | val | test == pairs
    assert len(train) + len(val) + len(test) == len(pairs)  # disjoint
    assert all(u < v for u, v in train | val | test)


def test_held_out_pairs_leave_the_graph_in_both_directions(cora):
    data = split_edges(cora, seed=0)
    g = data.graph
    src, dst = g.edge_index()
    edges = set(zip(src.tolist(), dst.tolist(), strict=True))
    for u, v in np.concatenate([data.val, data.test]).tolist():
        assert (u, v) not in edges and (v, u) not in edges
    assert _undirected_pairs(g) == {tuple(p) for p in data.train.tolist()}
    assert g.is_symmetric() and g.num_edges == 2 * len(data.train)
    np.testing.assert_array_equal(g.x, cora.x)
    np.testing.assert_array_equal(g.train_mask, cora.train_mask)


def test_same_seed_same_split_other_seed_other_split(cora):
    a, b, c = (split_edges(cora, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.test, b.test)
    np.testing.assert_array_equal(a.graph.indices, b.graph.indices)
    assert not np.array_equal(a.test, c.test)


def test_weights_follow_their_edges_and_self_loops_stay():
    src = np.array([0, 1, 1, 2, 2, 3, 0, 3, 3])
    dst = np.array([1, 0, 2, 1, 3, 2, 3, 0, 3])
    w = (src * 10 + dst).astype(np.float32)  # weight encodes the edge
    g = Graph.from_edges(src, dst, 4, edge_weight=w)
    data = split_edges(g, val_fraction=0.25, test_fraction=0.25, seed=1)
    s, d = data.graph.edge_index()
    np.testing.assert_array_equal(data.graph.edge_weight, s * 10 + d)
    assert (3, 3) in set(zip(s.tolist(), d.tolist(), strict=True))
    assert len(data.train) == 2 and len(data.val) == 1 and len(data.test) == 1


def test_directed_input_drops_the_single_stored_direction():
    g = Graph.from_edges(np.array([0, 1, 2]), np.array([1, 2, 0]), 3)
    data = split_edges(g, val_fraction=0.0, test_fraction=0.34, seed=0)
    (u, v), = data.test.tolist()
    s, d = data.graph.edge_index()
    assert data.graph.num_edges == 2
    assert (u, v) not in set(zip(s.tolist(), d.tolist(), strict=True))
    assert (v, u) not in set(zip(s.tolist(), d.tolist(), strict=True))


@pytest.mark.parametrize("kwargs, message", [
    ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "leaves no training pairs"),
])
def test_bad_fractions(cora, kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_edges(cora, **kwargs)


def test_bipartite_graphs_are_refused():
    g = Graph.from_edges(np.array([0, 2]), np.array([2, 0]), 3,
                         node_type=np.array([0, 0, 1], np.int8))
    with pytest.raises(ValueError, match="load_interactions"):
        split_edges(g)
