"""The ``edge-sharded`` mode: full-graph training with the edges split over the ranks.

Every rank holds every node's state (features, activations, parameters: replicated) and a
contiguous 1/W share of the destination-sorted edge list, plus the self-loops of a 1/W range of
nodes. Message passing runs unchanged on the local edges up to the point where per-edge values
become per-node values; there :func:`qgnn.training.nn.propagate.aggregate` combines the ranks'
partial results through :class:`EdgeCollectives` (sum: all-reduce SUM of partial sums; mean:
sums and counts in one all-reduce; max: all-reduce MAX; GAT's softmax reduces its max and its
denominator the same way). Whole node tensors cross the network, never edge rows.

Autograd: each collective is a ``torch.autograd.Function`` whose backward all-reduces the
incoming gradient (every rank computes the same loss on its replica, so the gradient of a
partial sum is the sum of the ranks' gradients of the result); parameter gradients are then
averaged over the ranks, which gives exactly the single-process gradient (docs/distributed.md).

Degree-Quant: protection probabilities use the global in-degree (computed once, before
sharding) and every rank draws the node mask from the same stream; ranges of per-edge
quantisation sites are reduced over the ranks (min/max all-reduced, percentiles over the
gathered values), so every rank quantises identically. Edge-level randomness (GAT attention
dropout, percentile subsamples of large edge tensors) uses a rank-local stream.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from qgnn.graph.container import Graph
from qgnn.graph.edge_shards import EdgeShard, load_edge_shard
from qgnn.training.distributed.context import (
    BACKENDS,
    DistContext,
    finish_together,
    init_from_env,
)
from qgnn.training.nn import shards
from qgnn.training.nn.block import Block, full_graph_block
from qgnn.training.nn.models import ModelConfig
from qgnn.training.presets import TrainConfig
from qgnn.training.progress import RunResult
from torch import nn

BYTE_KINDS = ("aggregate", "aggregate_backward", "ranges", "grads")


@dataclass(frozen=True, eq=False)
class ShardedBlock(Block):
    """A rank's share of a full-graph block: some edges, all nodes, global in-degrees.

    ``loop_nodes`` are the destinations whose self-loop this rank adds when a layer asks for
    self-loops, so across the ranks every node gets exactly one.
    """

    loop_nodes: torch.Tensor | None = None

    def with_self_loops(self, fill: float = 1.0) -> Block:
        loops = (torch.arange(self.num_dst, device=self.src.device) if self.loop_nodes is None
                 else self.loop_nodes)
        weight = None
        if self.edge_weight is not None:
            weight = torch.cat([self.edge_weight, self.edge_weight.new_full((loops.numel(),),
                                                                            fill)])
        return self.replace(src=torch.cat([self.src, loops]), dst=torch.cat([self.dst, loops]),
                            edge_weight=weight)


def shard_bounds(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``total`` items (sizes differ by
    at most one)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard_bounds: rank {rank} not in [0, {world_size})")
    return total * rank // world_size, total * (rank + 1) // world_size


def shard_block(block: Block, rank: int, world_size: int) -> ShardedBlock:
    """Rank ``rank``'s edges of a full-graph ``block`` (``num_src == num_dst``).

    The in-degrees stay global (GCN normalisation and Degree-Quant's protection read them), so
    they are taken from the whole block before it is cut.
    """
    if block.num_src != block.num_dst:
        raise ValueError(f"shard_block: edge sharding needs a full-graph block (num_src == "
                         f"num_dst), got {block.num_src} sources and {block.num_dst} "
                         f"destinations")
    in_degree = block.src_in_degree()
    lo, hi = shard_bounds(block.num_edges, rank, world_size)
    first, last = shard_bounds(block.num_dst, rank, world_size)
    weight = None if block.edge_weight is None else block.edge_weight[lo:hi].clone()
    return ShardedBlock(src=block.src[lo:hi].clone(), dst=block.dst[lo:hi].clone(),
                        num_src=block.num_src, num_dst=block.num_dst, edge_weight=weight,
                        src_ids=block.src_ids, in_degree=in_degree, protect=None,
                        loop_nodes=torch.arange(first, last, device=block.src.device))


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, partial: torch.Tensor, comm: EdgeCollectives) -> torch.Tensor:  # type: ignore[override]
        ctx.comm = comm
        out = partial.contiguous().clone()
        comm.all_reduce(out, dist.ReduceOp.SUM, "aggregate")
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        ctx.comm.all_reduce(grad, dist.ReduceOp.SUM, "aggregate_backward")
        return grad, None


class _AllReduceMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor, ties: torch.Tensor | None,  # type: ignore[override]
                comm: EdgeCollectives) -> torch.Tensor:
        ctx.comm = comm
        out = local.contiguous().clone()
        comm.all_reduce(out, dist.ReduceOp.MAX, "aggregate")
        if ties is not None:
            # this rank's share of the maximal edges: a tie between ranks splits the gradient
            # evenly over all maximal edges, as single-process scatter_reduce("amax") does
            mine = ties * (local == out)
            everyone = mine.clone()
            comm.all_reduce(everyone, dist.ReduceOp.SUM, "aggregate")
            ctx.save_for_backward(mine / everyone.clamp(min=1))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (share,) = ctx.saved_tensors
        grad = grad.contiguous().clone()
        ctx.comm.all_reduce(grad, dist.ReduceOp.SUM, "aggregate_backward")
        return grad * share, None, None


class EdgeCollectives:
    """The :class:`qgnn.training.nn.shards.CrossShard` of a process group, counting the bytes
    each rank contributes to every collective (``bytes[kind]``, kinds in :data:`BYTE_KINDS`)."""

    def __init__(self, ctx: DistContext, *, seed: int = 0, device: torch.device | str = "cpu",
                 group: Any = None) -> None:
        self.ctx, self.group, self.device = ctx, group, torch.device(device)
        self.bytes: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(int(seed) * 1_000_003 + 7919 * (ctx.rank + 1))

    @property
    def generator(self) -> torch.Generator:
        return self._generator

    def all_reduce(self, tensor: torch.Tensor, op: Any, kind: str) -> None:
        """In place; counted under ``kind`` (a single rank has nothing to reduce: no call)."""
        if self.ctx.world_size == 1:
            return
        self.bytes[kind] += tensor.numel() * tensor.element_size()
        self.calls[kind] += 1
        dist.all_reduce(tensor, op=op, group=self.group)

    def sum(self, partial: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(partial, self)

    def max(self, partial: torch.Tensor, ties: torch.Tensor | None) -> torch.Tensor:
        return _AllReduceMax.apply(partial, ties, self)

    def min_max(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = torch.stack([-lo.detach().float(), hi.detach().float()])
        self.all_reduce(both, dist.ReduceOp.MAX, "ranges")
        return -both[0], both[1]

    def total(self, count: int) -> int:
        value = torch.tensor([int(count)], dtype=torch.int64, device=self.device)
        self.all_reduce(value, dist.ReduceOp.SUM, "ranges")
        return int(value.item())

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        values = values.detach().reshape(-1)
        if self.ctx.world_size == 1:
            return values
        sizes = torch.zeros(self.ctx.world_size, dtype=torch.int64, device=self.device)
        sizes[self.ctx.rank] = values.numel()
        self.all_reduce(sizes, dist.ReduceOp.SUM, "ranges")
        width = int(sizes.max())
        padded = values.new_zeros(width)
        padded[: values.numel()] = values
        parts = [torch.empty_like(padded) for _ in range(self.ctx.world_size)]
        self.bytes["ranges"] += padded.numel() * padded.element_size()
        self.calls["ranges"] += 1
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p[: int(n)] for p, n in zip(parts, sizes.tolist(), strict=True)])

    def average_grads(self, model: nn.Module) -> None:
        """Average the replicated parameters' gradients over the ranks, in one all-reduce.

        A parameter without a gradient on every rank keeps none (as in a single process); one
        with a gradient anywhere gets zeros where it has none, so all ranks send equal buffers.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        if self.ctx.world_size == 1 or not params:
            return
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32,
                           device=self.device)
        self.all_reduce(has, dist.ReduceOp.MAX, "grads")
        used = [p for p, h in zip(params, has.tolist(), strict=True) if h]
        for p in used:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in used])  # type: ignore[union-attr]
        self.all_reduce(flat, dist.ReduceOp.SUM, "grads")
        flat /= self.ctx.world_size
        offset = 0
        for p in used:
            n = p.numel()
            p.grad.copy_(flat[offset: offset + n].view_as(p))  # type: ignore[union-attr]
            offset += n


def local_graph(graph: Graph, block: ShardedBlock) -> Graph:
    """``graph`` with only this rank's edges (node data kept): what the rank holds in memory."""
    src, dst = block.src.cpu().numpy(), block.dst.cpu().numpy()
    weight = None if block.edge_weight is None else block.edge_weight.cpu().numpy()
    node_fields = {f.name: getattr(graph, f.name) for f in dataclasses.fields(graph)
                   if f.name not in ("num_nodes", "indptr", "indices", "edge_weight")}
    return Graph.from_edges(src, dst, graph.num_nodes, edge_weight=weight, **node_fields)


def train_edge_sharded(ctx: DistContext, graph: Graph, model_cfg: ModelConfig,
                       train_cfg: TrainConfig, quant_cfg: Any = None, *,
                       progress: bool = False) -> tuple[RunResult, EdgeCollectives]:
    """Full-graph node classification of ``graph`` with the edges split over the ranks.

    Every rank calls this with the same arguments and gets the same result (the replicated
    model); ``quant_cfg`` (a :class:`~qgnn.training.quant.config.QuantConfig`) turns on QAT or
    Degree-Quant. Returns the run and the collectives (their byte counts).
    """
    check_backend(_backend())
    full = full_graph_block(graph)  # global in-degrees, before the edges are cut
    mine = shard_block(full, ctx.rank, ctx.world_size)
    in_degree = full.src_in_degree().numpy()
    del full
    return _train_local(ctx, local_graph(graph, mine), mine, in_degree, model_cfg, train_cfg,
                        quant_cfg, progress=progress)


def block_of_shard(shard: EdgeShard) -> ShardedBlock:
    """The :class:`ShardedBlock` of an edge shard file: what :func:`shard_block` cuts from the
    whole graph, built from this rank's edges alone."""
    n = shard.graph.num_nodes
    weight = None if shard.edge_weight is None else torch.from_numpy(
        np.ascontiguousarray(shard.edge_weight, np.float32))
    first, last = shard.loop_range
    return ShardedBlock(src=torch.from_numpy(np.ascontiguousarray(shard.src, np.int64)),
                        dst=torch.from_numpy(np.ascontiguousarray(shard.dst, np.int64)),
                        num_src=n, num_dst=n, edge_weight=weight, src_ids=torch.arange(n),
                        in_degree=torch.from_numpy(np.asarray(shard.in_degree, np.int64)),
                        protect=None, loop_nodes=torch.arange(first, last))


def train_edge_shard(ctx: DistContext, shard: EdgeShard, model_cfg: ModelConfig,
                     train_cfg: TrainConfig, quant_cfg: Any = None, *,
                     progress: bool = False) -> tuple[RunResult, EdgeCollectives]:
    """:func:`train_edge_sharded` from this rank's edge shard file
    (:func:`qgnn.graph.edge_shards.load_edge_shard`): the rank never holds other ranks'
    edges, from the file read to the last step."""
    if shard.rank != ctx.rank or shard.world != ctx.world_size:
        raise ValueError(f"edge shard of rank {shard.rank}/{shard.world} loaded by rank "
                         f"{ctx.rank}/{ctx.world_size}")
    return _train_local(ctx, shard.graph, block_of_shard(shard), shard.in_degree, model_cfg,
                        train_cfg, quant_cfg, progress=progress)


def _train_local(ctx: DistContext, local: Graph, mine: ShardedBlock, in_degree: np.ndarray,
                 model_cfg: ModelConfig, train_cfg: TrainConfig, quant_cfg: Any, *,
                 progress: bool) -> tuple[RunResult, EdgeCollectives]:
    from qgnn.training.quant.hooks import make_hooks
    from qgnn.training.tasks.node import train_node

    check_backend(_backend())
    device = torch.device("cpu")
    comm = EdgeCollectives(ctx, seed=train_cfg.seed, device=device)
    hooks: dict[str, Any] = {}
    inner = None
    if quant_cfg is not None:
        prepare_model, inner = make_hooks(quant_cfg, in_degree, num_layers=model_cfg.num_layers)
        hooks["prepare_model"] = prepare_model

    def blocks_for(_: Block, training: bool) -> Block | Sequence[Block]:
        return mine if inner is None else inner(mine, training)

    with shards.sharded(comm):
        result = train_node(local, model_cfg, train_cfg, blocks_for=blocks_for,
                            sync_grads=comm.average_grads, progress=progress and ctx.is_main,
                            **hooks)
    return result, comm


def train_and_save(ctx: DistContext, graph: Graph, runs: Sequence[tuple[str, ModelConfig,
                                                                        TrainConfig, Any]],
                   out_dir: str) -> None:
    """A rank's job for :func:`~qgnn.training.distributed.context.launch_local`: each
    ``(name, model_cfg, train_cfg, quant_cfg)`` of ``runs`` trained edge-sharded, then
    ``out_dir/<name>.rank<r>.safetensors`` (the final state dict) and
    ``out_dir/<name>.rank<r>.json`` (history and bytes reduced)."""
    from pathlib import Path

    from safetensors.torch import save_file

    for name, model_cfg, train_cfg, quant_cfg in runs:
        result, comm = train_edge_sharded(ctx, graph, model_cfg, train_cfg, quant_cfg)
        state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
        save_file(state, str(Path(out_dir) / f"{name}.rank{ctx.rank}.safetensors"))
        record = {"history": result.history, "bytes": dict(comm.bytes)}
        (Path(out_dir) / f"{name}.rank{ctx.rank}.json").write_text(json.dumps(record))


def check_backend(backend: str) -> None:
    """Refuse nccl for :func:`train_edge_sharded`: its tensors live on the CPU (the full-graph
    loop it reuses has no device option), and nccl reduces GPU tensors only."""
    if backend != "gloo":
        raise ValueError(f"edge-sharded training: backend {backend!r} is not supported by the "
                         f"full-graph training loop (CPU tensors); use --backend gloo. The "
                         f"collectives themselves run on GPU tensors with nccl (see "
                         f"bench/bench_distributed.py --device cuda)")


def _backend() -> str:
    return dist.get_backend() if dist.is_initialized() else "gloo"


def analytic_bytes(num_nodes: int, widths: Sequence[int], num_params: int, *, world_size: int,
                   num_tensors: int = 0, dtype_bytes: int = 4) -> dict[str, int]:
    """Bytes each rank contributes to all-reduces per full-graph training step of a stack with
    one sum aggregation per layer, ``widths[l]`` wide: forward and backward each all-reduce the
    ``(N, width)`` node tensor once per layer; the gradients are one buffer of ``num_params``
    values after one int32 flag per parameter tensor (``num_tensors``). Independent of W: every
    rank sends whole node tensors (zero for a single rank, which reduces nothing). A ring
    all-reduce moves ``2 (W - 1) / W`` times this over each rank's link."""
    if world_size == 1:
        return {"aggregate": 0, "aggregate_backward": 0, "grads": 0}
    per_pass = num_nodes * sum(widths) * dtype_bytes
    return {"aggregate": per_pass, "aggregate_backward": per_pass,
            "grads": num_params * dtype_bytes + num_tensors * 4}


def main(argv: list[str] | None = None) -> None:
    """``torchrun ... -m qgnn.training.distributed --mode edge-sharded --dataset D --model M``:
    full-graph node classification with the edges split over the ranks; rank 0 prints the
    result summary (with the bytes all-reduced) as JSON and, with ``--out``, saves the run."""
    from qgnn.graph.datasets import load_dataset
    from qgnn.training.presets import preset
    from qgnn.training.quant.cli_args import add_quant_arguments, quant_config_from_args
    from qgnn.training.tasks.node import node_model_config

    parser = argparse.ArgumentParser(prog="python -m qgnn.training.distributed --mode "
                                     "edge-sharded", description=main.__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="every rank loads the whole dataset, then keeps its "
                                          "edges (the whole edge list is held at start-up)")
    source.add_argument("--edge-shards", default=None,
                        help="folder written by python -m qgnn.graph.edge_shards for this world "
                             "size: each rank reads the node data and its own edges only")
    parser.add_argument("--model", required=True)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--backend", choices=BACKENDS, default="gloo",
                        help="gloo (CPU tensors; the path that has run) or nccl")
    parser.add_argument("--out", default=None, help="rank 0 saves the run (checkpoint) here")
    add_quant_arguments(parser)
    args = parser.parse_args(argv)
    qcfg = quant_config_from_args(args)
    try:
        check_backend(args.backend)
    except ValueError as exc:
        parser.error(str(exc))
    ctx = init_from_env(args.backend)
    try:
        shard = None
        if args.edge_shards is not None:
            shard = load_edge_shard(args.edge_shards, ctx.rank, ctx.world_size)
            graph = shard.graph
        else:
            graph = load_dataset(args.dataset)
        if not isinstance(graph, Graph):
            parser.error(f"--dataset {args.dataset!r}: edge-sharded mode trains node "
                         f"classification on a graph, got link-prediction pairs")
        chosen = preset(args.model, graph.name)
        fields = chosen.train.to_dict() | {"seed": args.seed}
        if args.epochs is not None:
            fields["epochs"] = args.epochs
        train_cfg = TrainConfig.from_dict(fields)
        model_fields = dict(chosen.model)
        if args.hidden is not None:
            model_fields["hidden"] = args.hidden
        model_cfg = node_model_config(graph, args.model, **model_fields)
        if shard is not None:
            result, comm = train_edge_shard(ctx, shard, model_cfg, train_cfg, qcfg)
            read = [int(shard.bytes_read), int(shard.src.size)]
        else:
            result, comm = train_edge_sharded(ctx, graph, model_cfg, train_cfg, qcfg,
                                              progress=False)
            read = [-1, -1]
        got = [torch.zeros(2, dtype=torch.int64) for _ in range(ctx.world_size)]
        dist.all_gather(got, torch.tensor(read, dtype=torch.int64))
        if ctx.is_main:
            summary = result.summary() | {"world_size": ctx.world_size,
                                          "bytes_reduced": dict(comm.bytes)}
            if shard is not None:
                summary["edge_shards"] = {"total_edges": shard.total_edges,
                                          "bytes_read_per_rank": [int(g[0]) for g in got],
                                          "edges_held_per_rank": [int(g[1]) for g in got]}
            if args.out is not None:
                from qgnn.training.checkpoint import save_run
                from qgnn.training.quant.state import quant_extra

                save_run(args.out, result.model, task="node",
                         dataset=args.dataset or graph.name,
                         model_config=model_cfg, train_config=train_cfg,
                         metrics=result.summary(), extra=quant_extra(result.model) or None)
                summary["checkpoint"] = args.out
            json.dump(summary, sys.stdout)
            sys.stdout.write("\n")
        finish_together()
    finally:
        dist.destroy_process_group()


__all__ = ["BYTE_KINDS", "EdgeCollectives", "ShardedBlock", "analytic_bytes", "block_of_shard",
           "check_backend", "local_graph", "main", "shard_block", "shard_bounds",
           "train_and_save", "train_edge_shard", "train_edge_sharded"]
