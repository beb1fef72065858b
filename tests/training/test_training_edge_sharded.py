"""Edge-sharded full-graph training: W gloo ranks on the loopback interface, each holding all
nodes and 1/W of the edges, take the same steps as one process holding the whole graph, for
every layer type, in FP32 and under Degree-Quant."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.distributed.context import launch_local
from qgnn.training.distributed.edge_sharded import (
    ShardedBlock,
    analytic_bytes,
    check_backend,
    shard_block,
    shard_bounds,
    train_and_save,
)
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.models import build_model
from qgnn.training.presets import TrainConfig
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from qgnn.training.tasks.node import node_model_config, train_node
from safetensors.torch import load_file

TRAIN = TrainConfig(epochs=3, patience=None, seed=5, lr=0.02)
# Degree-Quant with much protection, so the masks matter; percentile ranges (the default)
DQ = QuantConfig(bits=8, method="dq", p_min=0.2, p_max=0.6)
LAYER_KWARGS = {
    "gcn": {}, "sage": {}, "gin": {},
    "gat": {"heads": 2, "attn_dropout": 0.0},  # edge dropout draws from a rank-local stream
    # max/min/std: the MAX all-reduce and its gradient, and the mean's shared counts
    "egc": {"heads": 2, "bases": 2, "aggregators": ["symnorm", "max", "min", "std"]},
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _graph(nodes: int = 120, avg_degree: float = 6):
    return powerlaw_communities(nodes, avg_degree=avg_degree, num_features=6, num_communities=3,
                                seed=7)


def _runs(graph, models, quant):
    out = []
    for model in models:
        cfg = node_model_config(graph, model, hidden=8, dropout=0.5,
                                layer_kwargs=LAYER_KWARGS[model])
        for name, q in quant:
            out.append((f"{model}-{name}", cfg, TRAIN, q))
    return out


def _single(graph, cfg, train, quant):
    hooks = {}
    if quant is not None:
        prepare_model, blocks_for = make_hooks(quant, graph, num_layers=cfg.num_layers)
        hooks = {"prepare_model": prepare_model, "blocks_for": blocks_for}
    return train_node(graph, cfg, train, progress=False, **hooks)


def _check_same_as_single(tmp_path: Path, graph, runs, world: int, rtol: float) -> None:
    for name, cfg, train, quant in runs:
        ref = _single(graph, cfg, train, quant)
        ref_state = ref.model.state_dict()
        for rank in range(world):
            record = json.loads((tmp_path / f"{name}.rank{rank}.json").read_text())
            got = [(h["loss"], h["val_loss"]) for h in record["history"]]
            want = [(h["loss"], h["val_loss"]) for h in ref.history]
            np.testing.assert_allclose(got, want, rtol=rtol, err_msg=f"{name} rank {rank}")
            state = load_file(tmp_path / f"{name}.rank{rank}.safetensors")
            assert set(state) == set(ref_state), name
            for key, value in state.items():
                torch.testing.assert_close(value, ref_state[key], rtol=rtol, atol=rtol,
                                           msg=f"{name} rank {rank} {key}")
            assert record["bytes"]["aggregate"] > 0 and record["bytes"]["grads"] > 0


def test_shards_cover_every_edge_once_and_every_self_loop_once():
    block = full_graph_block(_graph())
    parts = [shard_block(block, r, 3) for r in range(3)]
    assert all(isinstance(p, ShardedBlock) for p in parts)
    assert sum(p.num_edges for p in parts) == block.num_edges
    assert {p.num_edges for p in parts} <= {block.num_edges // 3, block.num_edges // 3 + 1}
    pairs = sorted(zip(torch.cat([p.src for p in parts]).tolist(),
                       torch.cat([p.dst for p in parts]).tolist(), strict=True))
    assert pairs == sorted(zip(block.src.tolist(), block.dst.tolist(), strict=True))
    loops = torch.cat([p.with_self_loops().dst[p.num_edges:] for p in parts])
    assert sorted(loops.tolist()) == list(range(block.num_dst))
    for p in parts:  # in-degrees stay global
        torch.testing.assert_close(p.in_degree, block.src_in_degree())
    assert shard_bounds(10, 2, 3) == (6, 10)
    with pytest.raises(ValueError, match="rank 3"):
        shard_bounds(10, 3, 3)


def test_two_ranks_equal_one_process_for_every_layer_fp32_and_degree_quant(tmp_path):
    graph = _graph()
    runs = _runs(graph, list(LAYER_KWARGS), [("fp32", None), ("dq", DQ)])
    launch_local(train_and_save, 2, graph, runs, str(tmp_path), timeout_s=300)
    _check_same_as_single(tmp_path, graph, [r for r in runs if r[3] is None], 2, 1e-5)
    _check_same_as_single(tmp_path, graph, [r for r in runs if r[3] is not None], 2, 1e-5)


def test_three_ranks_uneven_shares_equal_one_process(tmp_path):
    graph = _graph(125, avg_degree=5.2)
    # edge shares and self-loop ranges both differ in size
    assert full_graph_block(graph).num_edges % 3 != 0 and graph.num_nodes % 3 != 0
    runs = _runs(graph, ["egc"], [("dq", DQ)])
    launch_local(train_and_save, 3, graph, runs, str(tmp_path), timeout_s=300)
    _check_same_as_single(tmp_path, graph, runs, 3, 1e-5)


def test_rank_local_randomness_keeps_the_replicas_identical(tmp_path):
    """Attention dropout and subsampled percentiles of edge sites draw per rank; the replicated
    parameters and ranges must still agree bit for bit."""
    graph = _graph()
    gat = node_model_config(graph, "gat", hidden=8, dropout=0.5,
                            layer_kwargs={"heads": 2, "attn_dropout": 0.5})
    gcn = node_model_config(graph, "gcn", hidden=8, dropout=0.5)
    sampled = dataclasses.replace(DQ, max_samples=256)  # edge tensors hold > 256 values
    runs = [("gat-drop", gat, TRAIN, None), ("gcn-sampled", gcn, TRAIN, sampled)]
    launch_local(train_and_save, 2, graph, runs, str(tmp_path), timeout_s=300)
    for name, *_ in runs:
        a, b = (load_file(tmp_path / f"{name}.rank{r}.safetensors") for r in range(2))
        assert set(a) == set(b)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{name} {key}")
    record = json.loads((tmp_path / "gcn-sampled.rank0.json").read_text())
    assert record["bytes"]["ranges"] > 0


def test_bytes_all_reduced_match_the_analytic_figure(tmp_path):
    """GCN in FP32: per training step the forward and the backward all-reduce each layer's
    (N, width) output once, and the gradients once; evaluation passes only the forward."""
    graph = _graph()
    cfg = node_model_config(graph, "gcn", hidden=8, dropout=0.5)
    launch_local(train_and_save, 2, graph, [("gcn", cfg, TRAIN, None)], str(tmp_path),
                 timeout_s=300)
    record = json.loads((tmp_path / "gcn.rank1.json").read_text())
    params = list(build_model(cfg).parameters())
    per_step = analytic_bytes(graph.num_nodes, [8, cfg.out_dim], sum(p.numel() for p in params),
                              num_tensors=len(params), world_size=2)
    steps, evals = TRAIN.epochs, TRAIN.epochs + 1  # one evaluation per epoch, one at the end
    assert record["bytes"] == {"aggregate": per_step["aggregate"] * (steps + evals),
                               "aggregate_backward": per_step["aggregate_backward"] * steps,
                               "grads": per_step["grads"] * steps}
    assert analytic_bytes(10, [4], 7, world_size=1) == {"aggregate": 0,
                                                         "aggregate_backward": 0, "grads": 0}


def test_nccl_is_refused_for_cpu_full_graph_training():
    with pytest.raises(ValueError, match="--backend gloo"):
        check_backend("nccl")


def test_torchrun_launches_the_edge_sharded_mode(tmp_path):
    """As users launch it: torchrun, two processes, the module entry with --mode."""
    spec = "synthetic:powerlaw?nodes=120&avg_degree=6&features=6&communities=3&seed=7"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "qgnn.training.distributed", "--mode", "edge-sharded", "--dataset", spec,
           "--model", "gcn", "--epochs", "2", "--hidden", "8", "--quant", "int8",
           "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert summary["bytes_reduced"]["aggregate"] > 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["extra"]["quant"]["config"]["method"] == "dq"  # a Degree-Quant checkpoint
    assert config["extra"]["quant"]["state"]  # with the ranges every rank agreed on


def test_unknown_mode_is_refused_with_the_choices():
    from qgnn.training.distributed.__main__ import MODES, main

    assert MODES["edge-sharded"] == "qgnn.training.distributed.edge_sharded"
    with pytest.raises(SystemExit, match="edge-sharded"):
        main(["--mode", "nope"])


def test_dataclass_replace_keeps_the_shard():
    block = shard_block(full_graph_block(_graph()), 1, 2)
    moved = dataclasses.replace(block, protect=None)
    assert isinstance(moved, ShardedBlock) and moved.loop_nodes is block.loop_nodes


# Gradients through the collectives, on a hand-made case: node 0 has four in-edges whose
# maximum (2.0) is tied three times, across both ranks; node 1 has one edge; node 2 none.
MSG = [[2.0, 1.0], [1.0, 1.0], [2.0, 3.0], [2.0, -1.0], [5.0, 0.5]]
DST = [0, 0, 0, 0, 1]
OUT_GRAD = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def _collective_grads_job(ctx, out_dir: str) -> None:
    from qgnn.training.distributed.edge_sharded import EdgeCollectives
    from qgnn.training.nn import shards
    from qgnn.training.nn.propagate import aggregate

    lo, hi = shard_bounds(len(DST), ctx.rank, ctx.world_size)
    record = {}
    for reduce in ("sum", "mean", "max"):
        msg = torch.tensor(MSG[lo:hi], requires_grad=True)
        with shards.sharded(EdgeCollectives(ctx)):
            out = aggregate(msg, torch.tensor(DST[lo:hi], dtype=torch.int64), 3, reduce)
        (out * torch.tensor(OUT_GRAD)).sum().backward()
        # every rank's loss is the whole loss: the edge gradient is W times the true one
        record[reduce] = {"out": out.tolist(), "grad": (msg.grad / ctx.world_size).tolist()}
    (Path(out_dir) / f"grads.rank{ctx.rank}.json").write_text(json.dumps(record))


def test_gradients_through_the_collectives_equal_one_process(tmp_path):
    from qgnn.training.nn.propagate import aggregate

    launch_local(_collective_grads_job, 2, str(tmp_path), timeout_s=120)
    ranks = [json.loads((tmp_path / f"grads.rank{r}.json").read_text()) for r in range(2)]
    for reduce in ("sum", "mean", "max"):
        msg = torch.tensor(MSG, requires_grad=True)
        out = aggregate(msg, torch.tensor(DST), 3, reduce)
        (out * torch.tensor(OUT_GRAD)).sum().backward()
        for r in ranks:
            torch.testing.assert_close(torch.tensor(r[reduce]["out"]), out.detach())
        grad = torch.tensor(ranks[0][reduce]["grad"] + ranks[1][reduce]["grad"])
        torch.testing.assert_close(grad, msg.grad, msg=reduce)
    # hand-computed: rank 0 holds edges 0-1, rank 1 edges 2-4; node 0's three maxima in column
    # 0 (edges 0, 2, 3) share its gradient 1.0; column 1's maximum (3.0) is edge 2 alone
    torch.testing.assert_close(torch.tensor(ranks[0]["max"]["grad"]),
                               torch.tensor([[1.0 / 3.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(torch.tensor(ranks[1]["max"]["grad"]),
                               torch.tensor([[1.0 / 3.0, 2.0], [1.0 / 3.0, 0.0], [3.0, 4.0]]))


def _edge_shard_job(ctx, shard_dir: str, runs, out_dir: str) -> None:
    """Each rank reads its own edge shard file only, then trains as train_and_save does."""
    from qgnn.graph.edge_shards import load_edge_shard
    from qgnn.training.distributed.edge_sharded import train_edge_shard
    from safetensors.torch import save_file

    shard = load_edge_shard(shard_dir, ctx.rank, ctx.world_size)
    for name, model_cfg, train_cfg, quant_cfg in runs:
        result, comm = train_edge_shard(ctx, shard, model_cfg, train_cfg, quant_cfg)
        state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
        save_file(state, str(Path(out_dir) / f"{name}.rank{ctx.rank}.safetensors"))
        record = {"history": result.history, "bytes": dict(comm.bytes),
                  "files_read": list(shard.files_read), "bytes_read": shard.bytes_read,
                  "edges_held": int(shard.src.size), "graph_edges": shard.graph.num_edges}
        (Path(out_dir) / f"{name}.rank{ctx.rank}.json").write_text(json.dumps(record))


def test_ranks_reading_only_their_edge_shard_files_equal_one_process(tmp_path):
    """From file to step: rank r opens nodes.npz and edges-r.npz, holds 1/W of the edges, and
    takes the same steps as one process holding the whole graph (GCN with Degree-Quant)."""
    from qgnn.graph.edge_shards import edges_path, nodes_path, write_edge_shards

    graph = _graph(125, avg_degree=5.2)
    shard_dir = tmp_path / "shards"
    write_edge_shards(graph, 3, shard_dir)
    runs = _runs(graph, ["gcn"], [("dq", DQ)])
    launch_local(_edge_shard_job, 3, str(shard_dir), runs, str(tmp_path), timeout_s=300)
    _check_same_as_single(tmp_path, graph, runs, 3, 1e-5)
    total = full_graph_block(graph).num_edges
    for r in range(3):
        record = json.loads((tmp_path / f"gcn-dq.rank{r}.json").read_text())
        assert record["files_read"] == [str(nodes_path(shard_dir)), str(edges_path(shard_dir, r))]
        lo, hi = shard_bounds(total, r, 3)
        assert record["edges_held"] == record["graph_edges"] == hi - lo
        assert record["bytes_read"] == (nodes_path(shard_dir).stat().st_size
                                        + edges_path(shard_dir, r).stat().st_size)


def test_torchrun_launches_the_edge_sharded_mode_from_edge_shards(tmp_path):
    from qgnn.graph.edge_shards import main as write_main

    spec = "synthetic:powerlaw?nodes=120&avg_degree=6&features=6&communities=3&seed=7"
    write_main(["--dataset", spec, "--world", "2", "--out", str(tmp_path / "es")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "qgnn.training.distributed", "--mode", "edge-sharded", "--edge-shards",
           str(tmp_path / "es"), "--model", "gcn", "--epochs", "2", "--hidden", "8"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    held = summary["edge_shards"]["edges_held_per_rank"]
    assert summary["world_size"] == 2 and sum(held) == summary["edge_shards"]["total_edges"]
    assert max(held) - min(held) <= 1
    assert all(b > 0 for b in summary["edge_shards"]["bytes_read_per_rank"])
