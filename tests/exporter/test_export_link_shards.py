"""Link shards of a run: the run's serving graph (the graph ``qgnn export`` writes) cut into parts
with features, in- and out-edges, plus the recommender arrays every sharded bundle carries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sharded_links_testkit as sk
from qgnn.exporter.export import load_run_model, serving_data
from qgnn.exporter.link_shards import main, write_link_shards
from qgnn.exporter.sharded import write_part
from qgnn.graph.shards import load_shard


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    data = sk.recommender_data()
    return sk.link_run(tmp_path_factory.mktemp("run"), data, "gcn"), data


def test_shards_cover_the_serving_graph_with_its_catalogue(run, tmp_path: Path) -> None:
    run_dir, data = run
    report = write_link_shards(run_dir, tmp_path, 3, "ldg", data=data)
    served = serving_data(load_run_model(run_dir), data)
    g = served.graph
    assert report["num_parts"] == 3 and sum(report["sizes"]) == g.num_nodes
    assert report["node_types"] == {"user": data.num_users, "item": data.num_items}
    in_edges = out_edges = 0
    for p in range(3):
        s = load_shard(tmp_path, p)
        np.testing.assert_array_equal(s.x, served.features[s.owned])
        in_edges += s.indices.size
        out_edges += s.out_indices.size
    assert in_edges == out_edges == g.num_edges
    names = sorted(f.name for f in (tmp_path / "catalogue").glob("*.npy"))
    assert names == ["external_ids_item.npy", "external_ids_user.npy", "node_type.npy",
                     "seen_indices.npy", "seen_indptr.npy"]
    assert json.loads((tmp_path / "link.json").read_text())["edge_cut"] == report["edge_cut"]


def test_a_link_part_needs_out_edges(run, tmp_path: Path) -> None:
    from qgnn.graph.partition import partition_graph
    from qgnn.graph.shards import shard_of

    _, data = run
    shard = shard_of(data.graph, partition_graph(data.graph, 2, "random"), 0)
    with pytest.raises(ValueError, match="no out-edges"):
        write_part(tmp_path, shard, np.zeros((shard.num_local, 4), np.float32), task="link")


def test_cli_refuses_a_missing_run(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--checkpoint", str(tmp_path / "nope"), "--parts", "2", "--out", str(tmp_path / "s")])
    assert info.value.code == 2
    assert "link_shards: error" in capsys.readouterr().err
