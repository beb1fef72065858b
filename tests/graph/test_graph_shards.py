"""Shard files: what one rank of partitioned training loads, checked against the graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qgnn.graph.partition import partition_graph
from qgnn.graph.shards import load_shard, main, write_shards
from qgnn.graph.synth import powerlaw_communities


def test_shard_files_round_trip(tmp_path) -> None:
    g = powerlaw_communities(400, avg_degree=6, num_communities=3, num_features=5, seed=2)
    part = partition_graph(g, 3, "ldg")
    write_shards(g, part, tmp_path)
    total_edges = 0
    for p in range(3):
        s = load_shard(tmp_path, p)
        assert np.array_equal(s.owned, part.nodes(p))
        assert np.array_equal(s.x, g.x[s.owned])
        # in-edges of owned node v are exactly the graph's in-neighbours of v
        v = int(s.owned[0])
        assert np.array_equal(s.indices[s.indptr[0]:s.indptr[1]],
                              g.csc.indices[g.csc.indptr[v]:g.csc.indptr[v + 1]])
        total_edges += s.indices.size
    assert total_edges == g.num_edges
    with pytest.raises(ValueError, match="missing"):
        load_shard(tmp_path, 3)


def test_cli_partitions_once_and_writes_shards(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("QGNN_DATA_DIR", str(tmp_path))
    spec = "synthetic:powerlaw?nodes=500&features=4&seed=1"
    main(["--dataset", spec, "--parts", "2", "--method", "ldg"])
    report = json.loads(capsys.readouterr().out)
    assert report["num_parts"] == 2 and sum(report["sizes"]) == 500
    assert load_shard(report["shards"], 1).num_parts == 2
    with pytest.raises(SystemExit):
        main(["--dataset", spec, "--parts", "0"])


def test_out_edges_are_the_owned_nodes_out_lists(tmp_path) -> None:
    g = powerlaw_communities(300, avg_degree=5, num_communities=3, num_features=4, seed=3)
    part = partition_graph(g, 2, "ldg")
    write_shards(g, part, tmp_path, out_edges=True)
    total = 0
    for p in range(2):
        s = load_shard(tmp_path, p)
        assert s.out_indptr is not None and s.out_indices is not None
        for row in (0, s.num_local - 1):
            v = int(s.owned[row])
            assert np.array_equal(s.out_indices[s.out_indptr[row]:s.out_indptr[row + 1]],
                                  g.csr.indices[g.csr.indptr[v]:g.csr.indptr[v + 1]])
        total += s.out_indices.size
    assert total == g.num_edges
    write_shards(g, part, tmp_path / "plain")
    assert load_shard(tmp_path / "plain", 0).out_indptr is None
