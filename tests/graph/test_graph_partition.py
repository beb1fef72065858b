"""Partitioner: every node owned once, capacity respected, LDG cuts fewer edges than random on
a community graph, and partition files round-trip and refuse another graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qgnn.graph.container import Graph
from qgnn.graph.partition import (
    bfs_order,
    ldg_partition,
    load_or_partition,
    load_partition,
    metis_available,
    partition_graph,
    partition_path,
    random_partition,
    save_partition,
    undirected_adjacency,
)
from qgnn.graph.synth import powerlaw_communities


@pytest.fixture(scope="module")
def community() -> Graph:
    return powerlaw_communities(3000, avg_degree=10, num_communities=6, num_features=4,
                                homophily=0.9, seed=3)


def _two_triangles() -> Graph:
    # triangles {0,1,2} and {3,4,5} joined by one edge 2-3, both directions stored
    pairs = [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)]
    src = [a for a, b in pairs] + [b for a, b in pairs]
    dst = [b for a, b in pairs] + [a for a, b in pairs]
    return Graph.from_edges(src, dst, 6)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("method", ["ldg", "random"])
def test_every_node_in_exactly_one_part_within_capacity(community: Graph, k: int,
                                                       method: str) -> None:
    part = partition_graph(community, k, method)
    assert part.parts.shape == (community.num_nodes,)
    assert part.parts.min() >= 0 and part.parts.max() < k
    assert part.sizes().sum() == community.num_nodes
    cap = math.ceil(community.num_nodes / k * 1.05)
    assert part.sizes().max() <= cap
    assert part.balance() <= 1.05 + k / community.num_nodes
    # nodes() lists are disjoint and cover everything
    covered = np.concatenate([part.nodes(p) for p in range(k)])
    assert np.array_equal(np.sort(covered), np.arange(community.num_nodes))


def test_ldg_cuts_fewer_edges_than_random(community: Graph) -> None:
    ldg = ldg_partition(community, 4).edge_cut(community)
    rnd = random_partition(community, 4).edge_cut(community)
    assert rnd == pytest.approx(0.75, abs=0.03)  # random 4 parts cut ~3/4 of the edges
    assert ldg < 0.6 * rnd


def test_ldg_greedy_rule_on_a_given_stream() -> None:
    g = _two_triangles()
    # 0 -> empty parts tie -> part 0; 1, 2 follow their placed neighbours (score 1·(1-1/3),
    # 2·(1-2/3)); 3's neighbour 2 sits in a full part -> part 1; 4, 5 follow 3
    part = ldg_partition(g, 2, slack=0.0, order=np.arange(6))
    assert part.parts.tolist() == [0, 0, 0, 1, 1, 1]
    assert sorted(part.sizes().tolist()) == [3, 3]
    assert part.edge_cut(g) == pytest.approx(2 / 14)  # only 2->3 and 3->2 cross
    assert len(set(part.parts[[0, 1, 2]].tolist())) == 1


def test_edge_cut_hand_computed() -> None:
    g = _two_triangles()
    from qgnn.graph.partition import Partition

    part = Partition(np.array([0, 0, 1, 1, 1, 1]), 2, "manual")
    # crossing pairs: 0-2, 1-2 (both directions) -> 4 of 14 directed edges
    assert part.edge_cut(g) == pytest.approx(4 / 14)
    assert part.balance() == pytest.approx(4 / 3)


def test_bfs_order_visits_every_node_once() -> None:
    g = Graph.from_edges([0, 1, 3], [1, 2, 4], 6)  # two components and an isolated node
    indptr, indices = undirected_adjacency(g)
    order = bfs_order(indptr, indices, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(6))


@pytest.mark.skipif(not metis_available(), reason="pymetis not installed")
def test_metis_balanced_and_better_than_random(community: Graph) -> None:
    part = partition_graph(community, 4, "metis")
    assert part.sizes().sum() == community.num_nodes
    assert part.balance() < 1.1
    assert part.edge_cut(community) < 0.6 * random_partition(community, 4).edge_cut(community)


def test_metis_missing_names_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_pymetis(name: str, *args: object, **kwargs: object) -> object:
        if name == "pymetis":
            raise ImportError("no pymetis")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pymetis)
    with pytest.raises(ValueError, match=r"pymetis.*ldg"):
        partition_graph(_two_triangles(), 2, "metis")
    assert partition_graph(_two_triangles(), 2, "auto").method == "ldg"


def test_file_round_trip_and_refuses_another_graph(tmp_path, community: Graph) -> None:
    part = ldg_partition(community, 3)
    path = save_partition(tmp_path / "p.npz", part)
    with np.load(path, allow_pickle=False) as z:  # no pickled entry anywhere
        assert all(z[k].dtype != object for k in z.files)
    back = load_partition(path, community)
    assert np.array_equal(back.parts, part.parts) and back.method == "ldg"
    other = powerlaw_communities(3000, avg_degree=10, num_communities=6, num_features=4, seed=4)
    with pytest.raises(ValueError, match="another graph"):
        load_partition(path, other)


def test_load_or_partition_stores_next_to_a_file_dataset(tmp_path, community: Graph) -> None:
    dataset = tmp_path / "g.npz"
    dataset.write_bytes(b"")
    first, path = load_or_partition(community, str(dataset), 2, "ldg")
    assert path == tmp_path / "g.npz.partitions" / "ldg-2.npz" and path.is_file()
    again, _ = load_or_partition(community, str(dataset), 2, "ldg")
    assert np.array_equal(first.parts, again.parts)
    with pytest.raises(ValueError, match="3 wanted"):
        load_or_partition(community, str(dataset), 3, "ldg", path=path)


def test_partition_path_for_builtin_and_synthetic(tmp_path) -> None:
    assert partition_path("Tolokers", 4, "ldg", root=tmp_path) == \
        tmp_path / "tolokers" / "partitions" / "ldg-4.npz"
    p = partition_path("synthetic:powerlaw?nodes=10", 2, "metis", root=tmp_path)
    assert p.parent.parent.parent == tmp_path / "synthetic" and p.name == "metis-2.npz"


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_part_counts_are_named(bad: object) -> None:
    with pytest.raises(ValueError, match="num_parts"):
        partition_graph(_two_triangles(), bad, "ldg")  # type: ignore[arg-type]


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="'kmeans'"):
        partition_graph(_two_triangles(), 2, "kmeans")  # type: ignore[arg-type]
