"""Edge shard files: each rank's file holds exactly the share ``shard_block`` cuts from the
whole graph, and a rank reads the node file and its own edge file only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.graph.edge_shards import (
    edges_path,
    load_edge_shard,
    nodes_path,
    write_edge_shards,
)
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.distributed.edge_sharded import block_of_shard, shard_block
from qgnn.training.nn.block import full_graph_block


def _graph():
    g = powerlaw_communities(125, avg_degree=5.2, num_features=6, num_communities=3, seed=7)
    rng = np.random.default_rng(0)  # weights, so their order is checked too
    return g.replace(edge_weight=rng.random(g.num_edges).astype(np.float32))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_file_holds_the_share_shard_block_cuts(tmp_path, world):
    graph = _graph()
    write_edge_shards(graph, world, tmp_path)
    full = full_graph_block(graph)
    held = 0
    for r in range(world):
        shard = load_edge_shard(tmp_path, r, world)
        want, got = shard_block(full, r, world), block_of_shard(shard)
        for name in ("src", "dst", "in_degree", "loop_nodes"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), msg=name)
        if want.edge_weight is None:
            assert got.edge_weight is None
        else:
            torch.testing.assert_close(got.edge_weight, want.edge_weight)
        assert shard.files_read == (str(nodes_path(tmp_path)), str(edges_path(tmp_path, r)))
        assert shard.bytes_read == (nodes_path(tmp_path).stat().st_size
                                    + edges_path(tmp_path, r).stat().st_size)
        assert shard.graph.num_edges == shard.src.size == want.num_edges
        np.testing.assert_array_equal(shard.graph.x, graph.x)
        np.testing.assert_array_equal(shard.graph.y, graph.y)
        held += shard.src.size
    assert held == graph.num_edges == load_edge_shard(tmp_path, 0, world).total_edges


def test_edge_files_shrink_as_one_over_w(tmp_path):
    graph = powerlaw_communities(400, avg_degree=20, num_features=4, num_communities=3, seed=1)
    sizes = {}
    for world in (1, 4):
        write_edge_shards(graph, world, tmp_path / f"w{world}")
        sizes[world] = max(edges_path(tmp_path / f"w{world}", r).stat().st_size
                           for r in range(world))
    assert sizes[4] < 0.3 * sizes[1]


def test_mismatched_files_are_refused(tmp_path):
    graph = _graph()
    write_edge_shards(graph, 2, tmp_path / "a")
    write_edge_shards(graph, 2, tmp_path / "b")
    with pytest.raises(ValueError, match="written for 2 ranks, not 3"):
        load_edge_shard(tmp_path / "a", 0, 3)
    with pytest.raises(ValueError, match="missing"):
        load_edge_shard(tmp_path / "a", 2, 2)
    edges_path(tmp_path / "b", 1).replace(edges_path(tmp_path / "a", 1))
    with pytest.raises(ValueError, match="another run"):
        load_edge_shard(tmp_path / "a", 1, 2)
    with pytest.raises(ValueError, match="int >= 1"):
        write_edge_shards(graph, 0, tmp_path / "c")
