"""The ``partitioned`` mode: minibatch training of a graph no single rank holds.

Each rank loads one :class:`~qgnn.graph.shards.GraphShard` (its partition's nodes, features,
labels and in-edges, plus the global partition book and degrees) and nothing else. Sampling that
crosses into another partition asks the owning rank for neighbour lists and feature rows over
torch.distributed (:mod:`.remote_sampling`, :mod:`.exchange`), every byte counted. With
``--sampler gns`` each rank keeps a GNS cache of remote nodes and seeds go to the rank whose
cache covers their neighbourhoods best (``--assignment affinity``); gradients are averaged by
DDP. Degree-Quant (``--quant``) protects by *global* in-degree, which every shard carries.
``--memory-budget`` caps the graph data a rank holds (:mod:`.memory`).

Evaluation and the final outputs are exact layer-wise inference over the partitions: per layer
each rank computes its own nodes from their full in-neighbourhoods after fetching the halo
(the remote in-neighbours' previous-layer rows). ``--bundle-out`` writes those outputs as a
sharded bundle (:mod:`qgnn.exporter.sharded`), one shard per partition. Design and formats:
docs/partitioned.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from qgnn.graph.shards import GraphShard, load_shard
from qgnn.training.distributed.context import (
    DistContext,
    finish_together,
    init_from_env,
    wrap_model,
)
from qgnn.training.distributed.exchange import ByteCounter, Exchanger
from qgnn.training.distributed.memory import MemoryLedger, parse_bytes
from qgnn.training.distributed.owner_sum import check_owner_sum, input_block, source_scale
from qgnn.training.distributed.remote_sampling import (
    ASSIGNMENTS,
    ESTIMATORS,
    OWNER_SUM,
    Assignment,
    PartitionedSampler,
    relabel,
)
from qgnn.training.nn.block import Block
from qgnn.training.nn.models import GNN, ModelConfig, build_model
from qgnn.training.presets import TrainConfig
from qgnn.training.progress import RunResult, count_parameters, seeded
from qgnn.training.sampling.blocks import to_block, weight_convention
from qgnn.training.sampling.config import check_fanouts
from qgnn.training.sampling.inference import layer_block, per_layer_blocks
from qgnn.training.tasks.node import node_metric, optimiser_and_tracker, score
from torch import nn
from torch.nn import functional as F

STREAM_ORDER, STREAM_BATCH, STREAM_CACHE, STREAM_ASSIGN, STREAM_TORCH = 11, 12, 13, 14, 15
FEATURE_KINDS = ("features", "cache")
# what the training rounds carry (``kind:part``, exchange.py), reported per epoch
BYTE_PARTS = ("structure:hop-requests", "structure:hop-neighbours", "structure:hop-weights",
              "structure:features-requests", "structure:cache-requests", "structure:cache-ids",
              "structure:cache-size", "features:partial-sums", "features:features-rows",
              "cache:cache-rows")


@dataclass
class PartitionedConfig:
    """How partitioned minibatches are drawn (a JSON-able record)."""

    sampler: str = "gns"  # "gns" (per-rank caches) or "uniform"
    fanouts: tuple[int, ...] = (10, 10)
    batch_size: int = 512
    cache_fraction: float = 0.05
    cache_refresh_period: int = 1
    assignment: Assignment = "affinity"
    # GNS input hop: "unbiased", "normalized", "stratified" weights, or "owner-sum" (owners
    # send partial-sum rows; linear input layers in FP32 only)
    estimator: str = "unbiased"
    uncached_fanout: int = 4  # stratified: uniform draws per destination for its non-held part
    memory_budget: int | None = None  # bytes of graph data per rank
    eval_chunk: int = 4096  # destinations per chunk of layer-wise inference

    def __post_init__(self) -> None:
        if self.sampler not in ("gns", "uniform"):
            raise ValueError(f"--sampler: partitioned training takes 'gns' or 'uniform', got "
                             f"{self.sampler!r}")
        self.fanouts = check_fanouts(tuple(self.fanouts))
        if self.assignment not in ASSIGNMENTS:
            raise ValueError(f"--assignment: expected one of {ASSIGNMENTS}, got "
                             f"{self.assignment!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"--gns-estimator: expected one of {ESTIMATORS}, got "
                             f"{self.estimator!r}")
        for name in ("batch_size", "cache_refresh_period", "eval_chunk", "uncached_fanout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected an int >= 1, got {v!r}")
        if not 0.0 < self.cache_fraction <= 1.0:
            raise ValueError(f"--cache-fraction: expected a fraction in (0, 1], got "
                             f"{self.cache_fraction!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fanouts"] = list(self.fanouts)
        return d


@dataclass
class EpochCounts:
    """What one epoch moved between ranks (this rank's receipts) and how sampling went."""

    loss: float
    seconds: float
    steps: int
    input_nodes: int = 0
    cache_hits: int = 0
    remote_rows: int = 0
    partial_rows: int = 0  # owner-sum: partial-sum rows, owned ones included
    bytes: dict[str, int] = field(default_factory=dict)


def _row_normalize(x: np.ndarray) -> np.ndarray:
    if (x < 0).any():
        raise ValueError("row_normalize: features have negative values; row sums are not a "
                         "meaningful scale")
    sums = x.sum(axis=1, keepdims=True)
    return (x / np.where(sums == 0, 1, sums)).astype(x.dtype, copy=False)


class Halo:
    """Exact layer-wise inference over the partitions. Per layer, the local destinations go a
    chunk at a time; each chunk fetches the previous-layer rows of its remote in-neighbours
    from their owners (one collective per chunk, every rank running the same number of
    chunks), so a rank never holds more than one chunk's remote rows."""

    def __init__(self, sampler: PartitionedSampler, chunk_size: int) -> None:
        self.sampler = sampler
        self.chunk_size = chunk_size
        n = sampler.shard.num_local
        mine = torch.tensor([math.ceil(n / chunk_size)], dtype=torch.int64)
        self.num_chunks = int(torch.cat(sampler.ex.all_gather_rows(mine, "stats")).max())

    def _chunk(self, a: int, b: int) -> tuple[Block, np.ndarray, np.ndarray]:
        """Destinations ``a..b-1`` over their full in-lists: the block, the rows it reads as
        positions in ``[owned; remote]``, and the remote ids to fetch."""
        shard, rank = self.sampler.shard, self.sampler.rank
        lo, hi = int(shard.indptr[a]), int(shard.indptr[b])
        sources = shard.indices[lo:hi]
        mine = self.sampler.edge_owner[lo:hi] == rank
        remote = np.unique(sources[~mine])
        rows = np.where(mine, np.searchsorted(shard.owned, sources),
                        shard.num_local + np.searchsorted(remote, sources))
        table_rows, src = relabel(np.arange(a, b, dtype=np.int64), rows)
        dst = np.repeat(np.arange(b - a, dtype=np.int64), self.sampler.deg[a:b])
        ids = np.where(table_rows < shard.num_local,
                       shard.owned[np.minimum(table_rows, shard.num_local - 1)],
                       remote[np.maximum(table_rows - shard.num_local, 0)]
                       if remote.size else 0)
        block = Block(src=torch.from_numpy(src), dst=torch.from_numpy(dst),
                      num_src=int(ids.size), num_dst=b - a, edge_weight=None,
                      src_ids=torch.from_numpy(ids),
                      in_degree=torch.from_numpy(shard.in_degree[ids]))
        return block, table_rows, remote

    @torch.no_grad()
    def outputs(self, gnn: GNN, x: torch.Tensor, blocks_for: Any) -> torch.Tensor:
        """``(n_local, out_dim)``: the model on the whole graph, rows of this rank's nodes."""
        gnn.eval()
        sampler, ledger = self.sampler, self.sampler.ledger
        n = sampler.shard.num_local
        h = gnn.begin(x)
        for i in range(len(gnn.layers)):
            outs = []
            for k in range(self.num_chunks):
                a, b = min(k * self.chunk_size, n), min((k + 1) * self.chunk_size, n)
                block, table_rows, remote = self._chunk(a, b)
                fetched = sampler.fetch_rows(remote, "eval", table=h)
                assert fetched is not None
                ledger.charge("halo-rows", fetched.numel() * fetched.element_size())
                if b == a:
                    continue
                xs = torch.empty((table_rows.size, h.shape[1]), dtype=h.dtype)
                local = table_rows < n
                xs[torch.from_numpy(local)] = h[torch.from_numpy(table_rows[local])]
                xs[torch.from_numpy(~local)] = fetched[torch.from_numpy(table_rows[~local] - n)]
                outs.append(gnn.step(i, xs, layer_block(blocks_for, block, i, False)))
                held = 0 if h.data_ptr() == x.data_ptr() else h.numel() * 4  # x: the shard's
                ledger.charge("layer-outputs", sum(o.numel() * 4 for o in outs) + held)
            h = torch.cat(outs) if outs else h[:0]
        ledger.release("halo-rows")
        ledger.release("layer-outputs")
        return gnn.finish(h) if gnn.head is not None else h


def sync_buffers(net: nn.Module, ctx: DistContext) -> None:
    """Make every rank's buffers equal: floating ones (Degree-Quant's range EMAs) averaged over
    the ranks, the others rank 0's. DDP broadcasts rank 0's buffers only at the start of a
    forward, so after a step each rank's ranges hold its own batch; inference and the saved
    checkpoint need one set, or each partition would be quantised on its own grid."""
    if ctx.world_size == 1:
        return
    with torch.no_grad():
        for buf in net.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf /= ctx.world_size
            else:
                dist.broadcast(buf, src=0)


def _gather_rows(ex: Exchanger, t: torch.Tensor) -> torch.Tensor:
    return torch.cat(ex.all_gather_rows(t, "eval"))


def _metrics(ex: Exchanger, shard: GraphShard, logits: torch.Tensor, metric: str
             ) -> dict[str, float]:
    """Train/val/test metric and val loss over the whole graph (rows gathered from all ranks)."""
    out: dict[str, float] = {}
    y = torch.from_numpy(shard.y)
    for split in ("train", "val", "test"):
        mask = torch.from_numpy(shard.masks[split])
        lg, yy = _gather_rows(ex, logits[mask]), _gather_rows(ex, y[mask])
        out[split] = score(metric, lg, yy)
        if split == "val":
            out["val_loss"] = float(F.cross_entropy(lg, yy).item())
    return out


def _sum_over_ranks(ex: Exchanger, values: list[float]) -> list[float]:
    got = ex.all_gather_rows(torch.tensor([values], dtype=torch.float64), "stats")
    return torch.cat(got).sum(0).tolist()


def train_partitioned(ctx: DistContext, shard: GraphShard, model_cfg: ModelConfig,
                      train_cfg: TrainConfig, cfg: PartitionedConfig, *,
                      prepare_model: Any = None, blocks_for: Any = None
                      ) -> tuple[RunResult, torch.Tensor, PartitionedSampler]:
    """Train on the partitioned graph; every rank returns the same :class:`RunResult` (its
    ``model`` the best epoch's weights), its own nodes' final outputs ``(n_local, C)`` and the
    sampler (its counter and ledger hold this rank's bytes and memory)."""
    started = time.perf_counter()
    if shard.y is None or shard.x is None or not shard.masks:
        raise ValueError("partitioned training: the shards need features, labels and masks")
    if len(cfg.fanouts) != model_cfg.num_layers:
        raise ValueError(f"--fanouts: {model_cfg.num_layers} layers need {model_cfg.num_layers} "
                         f"fanouts, got {list(cfg.fanouts)}")
    if train_cfg.row_normalize:
        shard = GraphShard(**{**shard.__dict__, "x": _row_normalize(shard.x)})
    owner_sum = cfg.sampler == "gns" and cfg.estimator == OWNER_SUM
    if owner_sum:
        check_owner_sum(model_cfg, prepare_model is not None or blocks_for is not None)
    counter = ByteCounter()
    ex = Exchanger(ctx, counter)
    ledger = MemoryLedger(cfg.memory_budget, ctx.rank)
    sampler = PartitionedSampler(shard, ex, cfg.fanouts, gns=cfg.sampler == "gns",
                                 cache_fraction=cfg.cache_fraction, ledger=ledger,
                                 estimator=cfg.estimator, uncached_fanout=cfg.uncached_fanout,
                                 source_scale=source_scale(model_cfg, shard) if owner_sum
                                 else None)
    halo = Halo(sampler, cfg.eval_chunk)
    classes = torch.cat(ex.all_gather_rows(torch.tensor([shard.num_classes]), "stats"))
    num_classes = int(classes.max())
    metric = node_metric(train_cfg.metric, num_classes)
    convention = weight_convention(model_cfg)
    train_local = np.flatnonzero(shard.masks["train"])
    x_local = torch.from_numpy(shard.x)
    with seeded(train_cfg.seed):
        net: nn.Module = build_model(model_cfg)
        if prepare_model is not None:
            net = prepare_model(net)
        model = wrap_model(net, ctx)
        optimiser, tracker, history = optimiser_and_tracker(model, train_cfg)
        if ctx.rank > 0:
            # the weights are built from the shared seed (DDP checks they agree); the rest of
            # torch's stream (dropout, Degree-Quant masks) must differ per rank, or row i of
            # every rank's batch gets the same dropout mask: rank 0 keeps the single-process
            # stream, the others draw their own
            torch.manual_seed(int(np.random.SeedSequence(
                [train_cfg.seed, STREAM_TORCH, ctx.rank]).generate_state(1)[0]))
        for epoch in range(train_cfg.epochs):
            t0 = time.perf_counter()
            before = counter.snapshot()
            before_parts = counter.parts_snapshot()
            if epoch % cfg.cache_refresh_period == 0:
                sampler.refresh(np.random.default_rng([train_cfg.seed, STREAM_CACHE, epoch,
                                                       ctx.rank]))
            seeds, labels = sampler.assign(train_local, cfg.assignment, np.random.default_rng(
                [train_cfg.seed, STREAM_ASSIGN, epoch]))
            order = np.random.default_rng([train_cfg.seed, STREAM_ORDER, epoch,
                                           ctx.rank]).permutation(seeds.size)
            seeds, labels = seeds[order], labels[order]
            counts = EpochCounts(loss=0.0, seconds=0.0, steps=0)
            losses = []
            for b, s in enumerate(range(0, seeds.size, cfg.batch_size)):
                batch, y = seeds[s:s + cfg.batch_size], labels[s:s + cfg.batch_size]
                sampled, sums = sampler.sample_with_sums(
                    batch, (train_cfg.seed, STREAM_BATCH, epoch, b))
                x, hits, remote = sampler.input_rows(sampled[0].node_ids)
                blocks = [to_block(sb, shard.in_degree, convention) for sb in sampled]
                if sums is not None and x is not None:
                    blocks[0] = input_block(sampled[0], sums, shard.in_degree, convention)
                    x = torch.cat([x, sums.rows])
                    ledger.charge("batch-rows", x.numel() * 4)
                    counts.partial_rows += sums.dst.size
                model.train()
                logits = model(x, per_layer_blocks(blocks_for, blocks, True))
                loss = F.cross_entropy(logits, torch.from_numpy(y))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss.item()}; lower the "
                                             f"learning rate")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.item()))
                counts.input_nodes += sampled[0].num_src
                counts.cache_hits += hits
                counts.remote_rows += remote
            ledger.release("batch-rows")
            counts.steps = len(losses)
            counts.seconds = time.perf_counter() - t0
            counts.bytes = ByteCounter.delta(counter.snapshot(), before)
            moved = ByteCounter.delta(counter.parts_snapshot(), before_parts)
            by_part = dict(zip(BYTE_PARTS, _sum_over_ranks(
                ex, [moved.get(k, 0) for k in BYTE_PARTS]), strict=True))
            counts.loss = float(np.mean(losses)) if losses else math.nan
            sync_buffers(net, ctx)
            logits = halo.outputs(net, x_local, blocks_for)
            m = _metrics(ex, shard, logits, metric)
            feature_b, struct_b, hits_all, remote_all, inputs_all, partial_all, loss_sum = \
                _sum_over_ranks(ex, [sum(counts.bytes.get(k, 0) for k in FEATURE_KINDS),
                                     counts.bytes.get("structure", 0), counts.cache_hits,
                                     counts.remote_rows, counts.input_nodes,
                                     counts.partial_rows, counts.loss])
            row = {"epoch": epoch, "loss": loss_sum / ctx.world_size,
                   "epoch_seconds": counts.seconds, "steps": counts.steps,
                   "cross_rank_feature_bytes": feature_b,
                   "cross_rank_cache_fill_bytes": float(_sum_over_ranks(
                       ex, [counts.bytes.get("cache", 0)])[0]),
                   "cross_rank_structure_bytes": struct_b,
                   "cache_hit_rate": hits_all / max(inputs_all, 1),
                   "remote_input_rate": remote_all / max(inputs_all, 1),
                   "partial_sum_rows": partial_all, "cross_rank_bytes_by_part": by_part, **m}
            history.append(row)
            tracker.update(epoch, m["val"], m["val_loss"], net)
            if tracker.should_stop:  # identical on every rank: the metrics were gathered
                break
        tracker.restore(net)
        sync_buffers(net, ctx)  # the snapshot was taken after a sync; cheap insurance
        logits = halo.outputs(net, x_local, blocks_for)
        final = _metrics(ex, shard, logits, metric)
    extra = _summary(history)
    extra["peak_graph_bytes_rank"] = float(ledger.peak)
    peaks = torch.cat(ex.all_gather_rows(torch.tensor([ledger.peak], dtype=torch.float64),
                                         "stats"))
    extra["peak_graph_bytes_max_rank"] = float(peaks.max())
    result = RunResult(metric=metric, best_epoch=tracker.best_epoch,
                       train_metric=final["train"], val_metric=final["val"],
                       test_metric=final["test"], epochs_run=len(history),
                       seconds=time.perf_counter() - started, num_params=count_parameters(net),
                       history=history, extra_metrics=extra, model=net)
    return result, logits, sampler


def _summary(history: list[dict[str, float]]) -> dict[str, float]:
    if not history:
        return {}
    keys = ("cross_rank_feature_bytes", "cross_rank_cache_fill_bytes",
            "cross_rank_structure_bytes", "cache_hit_rate", "remote_input_rate",
            "partial_sum_rows", "epoch_seconds")
    out = {f"{k}_per_epoch" if k.endswith("bytes") else k:
           float(np.median([h[k] for h in history])) for k in keys}
    for k in BYTE_PARTS:  # flat keys: extra metrics are numbers
        out[f"bytes_per_epoch:{k}"] = float(np.median([h["cross_rank_bytes_by_part"][k]
                                                      for h in history]))
    return out


# ---------------------------------------------------------------- one rank's whole job


def run_rank(ctx: DistContext, shard_dir: str, model_cfg: ModelConfig, train_cfg: TrainConfig,
             cfg: PartitionedConfig, out_dir: str, quant: dict[str, Any] | None = None,
             dataset: str = "", bundle_out: str | None = None) -> None:
    """Load this rank's shard, train, save the run (rank 0: ``out_dir/run``, and
    ``out_dir/result.json``), and with ``bundle_out`` write the sharded bundle."""
    shard = load_shard(shard_dir, ctx.rank)
    if shard.num_parts != ctx.world_size:
        raise ValueError(f"{shard_dir}: {shard.num_parts} parts for {ctx.world_size} ranks; "
                         f"partition into as many parts as ranks")
    hooks: dict[str, Any] = {}
    qcfg = None
    if quant is not None:
        from qgnn.training.quant.config import QuantConfig
        from qgnn.training.quant.hooks import make_hooks

        qcfg = QuantConfig.from_dict(quant)
        prepare, blocks_for = make_hooks(qcfg, shard.in_degree, num_layers=model_cfg.num_layers)
        hooks = {"prepare_model": prepare, "blocks_for": blocks_for}
    result, logits, sampler = train_partitioned(ctx, shard, model_cfg, train_cfg, cfg, **hooks)
    out = Path(out_dir)
    summary = {**result.summary(), "world_size": ctx.world_size, "config": cfg.to_dict(),
               "graph_bytes_held_rank0": sampler.ledger.held, "history": result.history}
    if ctx.is_main:
        from qgnn.training.checkpoint import save_run

        extra: dict[str, Any] = {"partitioned": cfg.to_dict()}
        if qcfg is not None:
            from qgnn.training.quant.state import quant_state

            extra["quant"] = {"config": qcfg.to_dict(), "state": quant_state(result.model)}
        save_run(out / "run", result.model, task="node", dataset=dataset or shard.name,
                 model_config=model_cfg, train_config=train_cfg, metrics=result.summary(),
                 extra=extra)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    if bundle_out is not None:
        from qgnn.exporter.sharded import assemble, write_part

        write_part(Path(bundle_out) / ".parts", shard, logits.numpy())
        dist.barrier()
        if ctx.is_main:
            assemble(Path(bundle_out), out / "run", shard.num_parts, shard.num_nodes,
                     metrics=result.summary())
        dist.barrier()


def main(argv: list[str] | None = None) -> None:
    """``torchrun --nproc-per-node W -m qgnn.training.distributed --mode partitioned
    --shards DIR --model M --out DIR [...]``: partitioned training, one part per rank."""
    from qgnn.training.presets import preset
    from qgnn.training.quant.cli_args import add_quant_arguments, quant_config_from_args
    from qgnn.training.sampling.config import parse_fanouts

    parser = argparse.ArgumentParser(prog="python -m qgnn.training.distributed --mode "
                                          "partitioned", description=main.__doc__)
    parser.add_argument("--shards", required=True,
                        help="folder of part-<r>.npz files (python -m qgnn.graph.shards)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--sampler", choices=("gns", "uniform"), default="gns")
    parser.add_argument("--fanouts", default="10,10")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--cache-fraction", type=float, default=0.05)
    parser.add_argument("--cache-refresh-period", type=int, default=1)
    parser.add_argument("--assignment", choices=ASSIGNMENTS, default="affinity")
    parser.add_argument("--gns-estimator", choices=ESTIMATORS, default="unbiased",
                        help="GNS input-hop weights; owner-sum: each destination's owner sends "
                             "one partial-sum row over the in-neighbours it owns (FP32 sage, "
                             "gcn or gin; docs/partitioned.md)")
    parser.add_argument("--uncached-fanout", type=int, default=4,
                        help="--gns-estimator stratified: uniform draws per input-hop "
                             "destination for the sources the rank does not hold")
    parser.add_argument("--memory-budget", default=None,
                        help="graph data per rank, e.g. 64MiB (simulated: exceeding it stops "
                             "the run with the figures)")
    parser.add_argument("--bundle-out", default=None,
                        help="write the sharded bundle here (docs/partitioned.md)")
    parser.add_argument("--backend", choices=("gloo",), default="gloo",
                        help="gloo only: the exchanges and the model run on CPU tensors (the "
                             "nccl/CUDA path is not built and has not run)")
    add_quant_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = PartitionedConfig(sampler=args.sampler, fanouts=parse_fanouts(args.fanouts),
                                batch_size=args.batch_size, cache_fraction=args.cache_fraction,
                                cache_refresh_period=args.cache_refresh_period,
                                assignment=args.assignment, estimator=args.gns_estimator,
                                uncached_fanout=args.uncached_fanout,
                                memory_budget=parse_bytes(args.memory_budget))
        qcfg = quant_config_from_args(args)
        if cfg.sampler == "gns" and cfg.estimator == OWNER_SUM:  # before any rank starts
            check_owner_sum(ModelConfig(model=args.model, in_dim=1, out_dim=1),
                            qcfg is not None)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    ctx = init_from_env(args.backend)
    try:
        shard = load_shard(args.shards, ctx.rank)
        chosen = preset(args.model, shard.name)
        fields = chosen.train.to_dict() | {"seed": args.seed}
        if args.epochs is not None:
            fields["epochs"] = args.epochs
        train_cfg = TrainConfig.from_dict(fields)
        model_fields = dict(chosen.model)
        if args.hidden is not None:
            model_fields["hidden"] = args.hidden
        model_fields["num_layers"] = len(cfg.fanouts)
        classes = int(shard.num_classes)
        got = [torch.zeros(1, dtype=torch.int64) for _ in range(ctx.world_size)]
        dist.all_gather(got, torch.tensor([classes]))
        model_cfg = ModelConfig(model=args.model, in_dim=shard.x.shape[1] if shard.x is not None
                                else 0, out_dim=int(max(int(g) for g in got)), **model_fields)
        del shard
        run_rank(ctx, args.shards, model_cfg, train_cfg, cfg, args.out,
                 None if qcfg is None else qcfg.to_dict(), bundle_out=args.bundle_out)
        if ctx.is_main:
            summary = json.loads((Path(args.out) / "result.json").read_text())
            summary.pop("history", None)
            json.dump(summary, sys.stdout)
            sys.stdout.write("\n")
        finish_together()
    finally:
        dist.destroy_process_group()
