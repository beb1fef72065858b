"""Partitioned training on 2 loopback ranks: it trains under a memory budget one rank could not
meet, moves fewer feature bytes with GNS caches, and writes a sharded bundle whose predictions
equal the trained model run on the whole graph in one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed_testkit import torchrun_partitioned
from qgnn.graph.partition import partition_graph
from qgnn.graph.shards import load_shard, shard_of, write_shards
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.distributed import launch_local
from qgnn.training.distributed.partitioned import PartitionedConfig, run_rank
from qgnn.training.nn.models import ModelConfig
from qgnn.training.presets import TrainConfig


def _graph():
    return powerlaw_communities(3000, avg_degree=8, num_communities=4, num_features=64,
                                homophily=0.85, seed=5)


def _graph_bytes(graph) -> int:
    """What one rank would hold with the whole graph as its single part."""
    whole = shard_of(graph, partition_graph(graph, 1, "random"), 0)
    return sum(whole.nbytes().values())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("partitioned")
    g = _graph()
    part = partition_graph(g, 2, "ldg")
    write_shards(g, part, root / "shards")
    budget = int(0.85 * _graph_bytes(g))
    mc = ModelConfig(model="sage", in_dim=64, out_dim=4, hidden=16, num_layers=2)
    tc = TrainConfig(epochs=3, lr=0.02, patience=None)
    cfg = PartitionedConfig(sampler="gns", fanouts=(5, 5), batch_size=32,
                            cache_fraction=0.05, memory_budget=budget, eval_chunk=64)
    quant = {"method": "dq", "bits": 8}
    launch_local(run_rank, 2, str(root / "shards"), mc, tc, cfg, str(root / "out"), quant,
                 "synthetic", str(root / "bundles"), timeout_s=300)
    return {"root": root, "graph": g, "partition": part, "budget": budget, "model": mc,
            "train": tc}


def test_trains_within_a_budget_one_rank_cannot_meet(trained: dict) -> None:
    result = json.loads((trained["root"] / "out" / "result.json").read_text())
    assert result["world_size"] == 2 and result["epochs_run"] == 3
    assert result["peak_graph_bytes_max_rank"] <= trained["budget"]
    assert trained["budget"] < _graph_bytes(trained["graph"])
    assert result["test_metric"] > 0.5  # 4 balanced classes: chance is 0.25
    assert result["cross_rank_feature_bytes_per_epoch"] > 0
    assert (trained["root"] / "out" / "run" / "config.json").is_file()


def test_one_rank_is_refused_by_the_same_budget(tmp_path: Path) -> None:
    g = _graph()
    write_shards(g, partition_graph(g, 1, "random"), tmp_path / "shards")
    mc = ModelConfig(model="sage", in_dim=64, out_dim=4, hidden=16, num_layers=2)
    cfg = PartitionedConfig(sampler="uniform", fanouts=(5, 5),
                            memory_budget=int(0.85 * _graph_bytes(g)))
    with pytest.raises(Exception, match="memory-budget"):
        launch_local(run_rank, 1, str(tmp_path / "shards"), mc, TrainConfig(epochs=1), cfg,
                     str(tmp_path / "out"), timeout_s=120)


def _full_graph_logits(trained: dict) -> np.ndarray:
    """The saved model on the whole graph in one process (independent of the halo code)."""
    from qgnn.exporter.export import load_run_model
    from qgnn.graph.neighbourhood import full_khop
    from qgnn.training.sampling.blocks import to_block

    run = load_run_model(trained["root"] / "out" / "run")
    g = trained["graph"]
    sampled = full_khop(g.csc, np.arange(g.num_nodes), 1)[0]
    block = to_block(sampled, g.in_degree(), "sum")
    with torch.no_grad():
        return run.model(torch.from_numpy(g.x[sampled.node_ids]), [block, block]).numpy()


def test_sharded_bundle_serves_the_trained_model(trained: dict) -> None:
    from qgnn.runtime.bundle.reader import load_bundle
    from qgnn.runtime.engine.sharded import ShardedBackend, ShardNotServedError

    root = trained["root"] / "bundles"
    expected = _full_graph_logits(trained)
    probs_ref = torch.softmax(torch.from_numpy(expected), 1).numpy()
    ids = np.arange(trained["graph"].num_nodes)
    with load_bundle(root / "all" / "partitioned" / "1") as bundle:
        backend = ShardedBackend(bundle)
        assert backend.num_nodes == ids.size and backend.held == [0, 1]
        got = backend.predict_nodes(ids)
    assert np.abs(got - probs_ref).max() < 0.02  # INT8 rows: a 1/127 step of the row peak
    assert (got.argmax(1) == probs_ref.argmax(1)).mean() > 0.99
    parts = trained["partition"].parts
    with load_bundle(root / "shard-1" / "partitioned" / "1") as bundle:
        one = ShardedBackend(bundle)
        mine = ids[parts == 1]
        assert np.allclose(one.predict_nodes(mine), got[mine])
        foreign = int(ids[parts == 0][0])
        with pytest.raises(ShardNotServedError, match=f"node {foreign} belongs to shard 0"):
            one.predict_nodes(np.array([int(mine[0]), foreign]))


def test_shard_replica_through_the_data_plane(trained: dict) -> None:
    from prometheus_client import CollectorRegistry
    from qgnn.runtime.dataplane import DataPlane
    from qgnn.runtime.engine.sharded import ShardNotServedError
    from qgnn.runtime.messages import ModelSelector
    from qgnn.runtime.metrics import ServingMetrics
    from qgnn.runtime.repository import ModelRepository

    repo = ModelRepository(trained["root"] / "bundles" / "shard-0",
                           metrics=ServingMetrics.create(CollectorRegistry()))
    try:
        repo.scan()
        plane = DataPlane(repo)
        parts = trained["partition"].parts
        own = np.flatnonzero(parts == 0)[:3]
        out = plane.predict_nodes(ModelSelector("partitioned"), own)
        assert out.probabilities.shape == (3, 4)
        with pytest.raises(ShardNotServedError, match="shard 1"):
            plane.predict_nodes(ModelSelector("partitioned"), np.flatnonzero(parts == 1)[:1])
    finally:
        repo.close()


def test_torchrun_launch(tmp_path: Path) -> None:
    g = _graph()
    write_shards(g, partition_graph(g, 2, "ldg"), tmp_path / "shards")
    torchrun_partitioned(tmp_path / "shards", tmp_path / "out", "--sampler", "uniform")
    assert load_shard(tmp_path / "shards", 1).num_parts == 2
