"""Sharded link bundles for the tests: a calibrated INT8 link run on a small bipartite recommender
graph, its unsharded bundle (``qgnn export``), and its sharded bundles written by distributed
layer-wise inference on W spawned gloo ranks (``--mode infer``), so every comparison is between
the two real pipelines. Needs torch (the training extra)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ShardedCase:
    """One model, its unsharded bundle and its sharded bundle repositories."""

    data: Any  # the LinkData
    run: Path
    bundle: Path  # unsharded
    repos: Path  # all/, shard-<p>/ repositories
    owner: np.ndarray  # (N,) the partition book
    parts: int

    def sharded(self, held: str = "all") -> Path:
        return self.repos / held / "partitioned" / "1"


def recommender_data(num_users: int = 40, num_items: int = 60, seed: int = 0) -> Any:
    from qgnn.graph.synth import bipartite_recommender

    return bipartite_recommender(num_users, num_items, interactions_per_user=6,
                                 num_features=12, seed=seed)


def directed_data(num_nodes: int = 90, seed: int = 1) -> Any:
    """Link data of a directed graph without node types (every node is an item): its out-lists
    differ from its in-lists, so sharded bundles store both."""
    from qgnn.graph.container import Graph
    from qgnn.graph.links import split_edges

    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, num_nodes, 500), rng.integers(0, num_nodes, 500)
    keep = src != dst
    x = rng.standard_normal((num_nodes, 12)).astype(np.float32)
    graph = Graph.from_edges(src[keep], dst[keep], num_nodes, x=x)
    return split_edges(graph, seed=seed)


def link_run(root: Path, data: Any, kind: str, decoder: str = "dot", *, quant: bool = True
             ) -> Path:
    """A Degree-Quant INT8 link model of ``kind`` (hidden 8, 2 layers) with ``decoder``, its
    ranges calibrated by three forward passes on the message graph, saved as a run (training
    would only change the weights); ``quant=False``: the FP32 model. A layer-mean kind
    (LightGCN) learns an embedding table."""
    import torch
    from qgnn.contract.layers import layer_spec
    from qgnn.training.checkpoint import save_run
    from qgnn.training.nn.block import full_graph_block
    from qgnn.training.nn.models import ModelConfig
    from qgnn.training.presets import TrainConfig
    from qgnn.training.quant import QuantConfig, quant_state, quantize_model
    from qgnn.training.tasks.link import build_link_model

    learned = layer_spec(kind).layer_mean
    graph = data.graph
    in_dim = 8 if learned else int(graph.num_features)
    cfg = ModelConfig(model=kind, in_dim=in_dim, out_dim=8, hidden=8, num_layers=2)
    config = QuantConfig(bits=8)
    torch.manual_seed(0)
    model = build_link_model(cfg, decoder, graph.num_nodes if learned else None)
    if quant:
        model = quantize_model(model, config)
        model.train()
        x = None if learned else torch.from_numpy(graph.x)
        with torch.no_grad():
            for _ in range(3):
                model(x, full_graph_block(graph))
    model.eval()
    run = root / f"run-{kind}-{decoder}-{'int8' if quant else 'fp32'}"
    extra = {"quant": {"config": config.to_dict(), "state": quant_state(model)}} if quant else {}
    save_run(run, model, task="link", dataset="synthetic:bipartite_recommender",
             model_config=cfg, train_config=TrainConfig(decoder=decoder), metrics={},
             num_embeddings=graph.num_nodes if learned else None, extra=extra)
    return run


def sharded_case(root: Path, data: Any, kind: str, decoder: str, parts: int, *,
                 replicate_items: bool = False, quant: bool = True) -> ShardedCase:
    """The run, its unsharded export and its ``parts``-way sharded bundles (LDG parts)."""
    from qgnn.exporter.export import export_run
    from qgnn.exporter.link_shards import write_link_shards
    from qgnn.graph.shards import load_shard
    from qgnn.training.distributed import launch_local
    from qgnn.training.distributed.infer import run_rank

    run = link_run(root, data, kind, decoder, quant=quant)
    bundle = export_run(run, root / "unsharded", name="partitioned", graph=data,
                        parity=False).bundle
    write_link_shards(run, root / "shards", parts, "ldg", data=data)
    launch_local(run_rank, parts, str(run), str(root / "shards"), str(root / "bundles"),
                 "partitioned", 1, 16, 1, replicate_items, timeout_s=300)
    owner = load_shard(root / "shards", 0).parts
    return ShardedCase(data, run, bundle, root / "bundles", owner, parts)
