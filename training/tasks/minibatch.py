"""Minibatch training over sampled blocks (uniform or GNS), mixed CPU-GPU, optionally DDP.

The graph and the feature matrix stay in host memory; sampling threads run ahead of the trainer
(:mod:`qgnn.training.sampling.loader`), and only the input rows not held by the GNS cache cross
to the device, each copy counted (:mod:`qgnn.training.sampling.transfer`). Node classification
trains on the seeds' logits; link prediction samples one negative per positive pair and uses
every pair endpoint as a seed. Evaluation is exact layer-wise full-graph inference or a sampled
pass. ``prepare_model`` / ``blocks_for`` are the same hooks as full-graph training
(Degree-Quant sets ``Block.protect`` per layer from ``Block.in_degree``, the full-graph
in-degree of each source).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from qgnn.graph.container import Graph
from qgnn.graph.links import LinkData
from qgnn.training.nn.models import GNN, ModelConfig, build_model
from qgnn.training.presets import TrainConfig
from qgnn.training.progress import RunResult, count_parameters, seeded
from qgnn.training.sampling.batch import (
    BatchBuilder,
    DeviceBatch,
    FeatureStore,
    HostBatch,
    attach_cache_features,
    to_device_batch,
)
from qgnn.training.sampling.blocks import weight_convention
from qgnn.training.sampling.config import SamplingConfig
from qgnn.training.sampling.gns import GNSSampler
from qgnn.training.sampling.inference import (
    layerwise_inference,
    per_layer_blocks,
    sampled_inference,
)
from qgnn.training.sampling.loader import prefetch
from qgnn.training.sampling.transfer import TransferCounter, module_to_device
from qgnn.training.sampling.uniform import UniformSampler
from qgnn.training.tasks.link import (
    LinkModel,
    build_link_model,
    check_link_task,
    data_for_model,
    eval_negatives,
    final_metrics,
    link_loss,
    message_graph,
    metric_name,
    sample_negatives,
    split_score,
)
from qgnn.training.tasks.node import (
    BlocksFor,
    PrepareModel,
    check_model_config,
    node_metric,
    optimiser_and_tracker,
    prepare_features,
    score,
)
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from qgnn.training.distributed import DistContext

# Independent random streams derived from TrainConfig.seed.
STREAM_ORDER, STREAM_BATCH, STREAM_CACHE, STREAM_EVAL = 1, 2, 3, 4
TRAIN_KINDS = ("features", "cache", "structure", "labels")
FEATURE_KINDS = ("features", "cache")


@dataclass
class EpochStats:
    """What one training epoch moved and how fast it went."""

    loss: float
    seconds: float
    seeds: int
    steps: int
    input_nodes: int
    cache_hits: int
    sampled_edges: int
    bytes: dict[str, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.input_nodes if self.input_nodes else 0.0

    def row(self) -> dict[str, float]:
        return {"loss": self.loss, "epoch_seconds": self.seconds,
                "seeds_per_s": self.seeds / self.seconds if self.seconds else 0.0,
                "sampled_edges": float(self.sampled_edges),
                "input_nodes": float(self.input_nodes), "cache_hit_rate": self.hit_rate,
                "h2d_feature_bytes": float(sum(self.bytes.get(k, 0) for k in FEATURE_KINDS)),
                "h2d_bytes": float(sum(self.bytes.get(k, 0) for k in TRAIN_KINDS))}


def make_sampler(graph: Graph, cfg: SamplingConfig) -> UniformSampler | GNSSampler:
    if cfg.sampler == "uniform":
        return UniformSampler(graph.csc, cfg.fanouts)
    if cfg.sampler == "gns":
        return GNSSampler(graph.csc, cfg.fanouts, cfg.cache_fraction, graph.out_degree(),
                          cfg.gns_estimator, cfg.gns_layers, cfg.gns_uncached_fanout)
    raise ValueError(f"SamplingConfig.sampler: {cfg.sampler!r} has no minibatch sampler")


class Pipeline:
    """The per-run sampling machinery: sampler, feature store, batch builders, byte counter."""

    def __init__(self, graph: Graph, model_cfg: ModelConfig, cfg: SamplingConfig) -> None:
        if len(cfg.fanouts) != model_cfg.num_layers:
            raise ValueError(f"SamplingConfig.fanouts: {model_cfg.num_layers} layers need "
                             f"{model_cfg.num_layers} fanouts, got {list(cfg.fanouts)}")
        self.graph, self.cfg = graph, cfg
        self.device = cfg.torch_device
        self.counter = TransferCounter()
        self.in_degree = graph.csc.degree()
        self.convention = weight_convention(model_cfg)
        self.store = FeatureStore(graph.x, self.device, cfg.feature_dtype)
        self.store.attach(self.counter)
        self.sampler = make_sampler(graph, cfg)
        self.builder = BatchBuilder(self.sampler, self.in_degree, self.convention, self.store,
                                    graph.edge_weight)

    def begin_epoch(self, epoch: int, seed: int) -> None:
        """Redraw the GNS cache every ``cache_refresh_period`` epochs (same draw on every
        rank) and load its features onto the device."""
        sampler = self.sampler
        if isinstance(sampler, GNSSampler) and epoch % self.cfg.cache_refresh_period == 0:
            cache = sampler.refresh(np.random.default_rng([seed, STREAM_CACHE, epoch]))
            sampler.cache = attach_cache_features(cache, self.store, self.device, self.counter)

    def eval_builder(self) -> BatchBuilder:
        return BatchBuilder(UniformSampler(self.graph.csc, self.cfg.fanouts), self.in_degree,
                            self.convention, self.store, self.graph.edge_weight)


def _progress_bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                disable=None)  # None: quiet when stderr is not a terminal


def run_epoch(pipeline: Pipeline, batches: list[np.ndarray],
              stage: Callable[[int], HostBatch], step: Callable[[DeviceBatch], float],
              bar: Any = None) -> EpochStats:
    """Stage the batches on sampling threads, move each one and run ``step`` on it."""
    cfg, counter = pipeline.cfg, pipeline.counter
    before = counter.snapshot()
    started = time.perf_counter()
    losses, seeds, inputs, hits, edges = [], 0, 0, 0, 0
    last_post = 0.0
    for host in prefetch(range(len(batches)), stage, workers=cfg.workers, depth=cfg.prefetch):
        seeds += host.seeds.size
        inputs += host.num_inputs
        hits += host.num_hits
        edges += host.sampled_edges
        losses.append(step(to_device_batch(host, pipeline.device, counter)))
        if bar is not None:
            bar.update(1)
            now = time.perf_counter()
            if now - last_post > 0.5:
                last_post = now
                moved = counter.bytes(*TRAIN_KINDS) - sum(before[k] for k in TRAIN_KINDS)
                bar.set_postfix(seeds_s=f"{seeds / (now - started):.0f}",
                                hit=f"{hits / max(inputs, 1):.1%}",
                                moved=f"{moved / 2**20:.1f}MB", loss=f"{losses[-1]:.4f}")
    if pipeline.device.type == "cuda":
        torch.cuda.synchronize(pipeline.device)
    return EpochStats(loss=float(np.mean(losses)) if losses else math.nan,
                      seconds=time.perf_counter() - started, seeds=seeds, steps=len(losses),
                      input_nodes=inputs, cache_hits=hits, sampled_edges=edges,
                      bytes=TransferCounter.delta(counter.snapshot(), before))


def _split_batches(ids: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [ids[s:s + batch_size] for s in range(0, ids.size, batch_size)]


def _optimise(model: nn.Module, optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss.item()}; lower the learning rate")
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.item())


def _summary_metrics(epochs: list[EpochStats]) -> dict[str, float]:
    """Per-epoch figures over the run: medians, and the mean cache hit rate."""
    rows = [e.row() for e in epochs]
    if not rows:
        return {}
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {"seeds_per_s": med["seeds_per_s"],
            "sampled_edges_per_s": statistics.median(
                e.sampled_edges / e.seconds for e in epochs if e.seconds),
            "cache_hit_rate": float(np.mean([r["cache_hit_rate"] for r in rows])),
            "h2d_feature_bytes_per_epoch": med["h2d_feature_bytes"],
            "h2d_bytes_per_epoch": med["h2d_bytes"],
            "input_nodes_per_epoch": med["input_nodes"]}


def train_minibatch(data: Graph | LinkData, model_cfg: ModelConfig, train_cfg: TrainConfig,
                    sampling_cfg: SamplingConfig, *, prepare_model: PrepareModel | None = None,
                    blocks_for: BlocksFor | None = None, progress: bool = True,
                    distributed: DistContext | None = None) -> RunResult:
    """Train on ``data`` (a Graph: node classification; LinkData: link prediction).

    ``sampling_cfg.sampler == "full"`` hands over to the full-graph trainers
    (:func:`~qgnn.training.tasks.node.train_node` / :func:`~qgnn.training.tasks.link.train_link`).
    ``distributed`` is a :class:`qgnn.training.distributed.DistContext` of an initialised
    process group (data-parallel); ``None`` trains in this process. ``RunResult.extra_metrics``
    holds per-epoch medians of throughput and host-to-device bytes and the cache hit rate;
    ``RunResult.history`` one row per epoch.
    """
    if sampling_cfg.sampler == "full":
        if distributed is not None and distributed.world_size > 1:
            raise ValueError("SamplingConfig.sampler: full-graph training is single-process; "
                             "use uniform or gns for data-parallel training")
        if isinstance(data, LinkData):
            from qgnn.training.tasks.link import train_link

            return train_link(data, model_cfg, train_cfg, prepare_model=prepare_model,
                              blocks_for=blocks_for, progress=progress)
        from qgnn.training.tasks.node import train_node

        return train_node(data, model_cfg, train_cfg, prepare_model=prepare_model,
                          blocks_for=blocks_for, progress=progress)
    if isinstance(data, LinkData):
        return _train_link(data, model_cfg, train_cfg, sampling_cfg, prepare_model, blocks_for,
                           progress, distributed)
    if isinstance(data, Graph):
        return _train_node(data, model_cfg, train_cfg, sampling_cfg, prepare_model, blocks_for,
                           progress, distributed)
    raise ValueError(f"train_minibatch.data: expected a Graph or LinkData, got "
                     f"{type(data).__name__}")


def _epoch_order(ids: np.ndarray, seed: int, epoch: int,
                 distributed: DistContext | None) -> np.ndarray:
    from qgnn.training.distributed import shard

    order = np.random.default_rng([seed, STREAM_ORDER, epoch]).permutation(ids)
    if distributed is None:
        return order
    return shard(order, distributed.rank, distributed.world_size)


def _rank(distributed: DistContext | None) -> int:
    return 0 if distributed is None else distributed.rank


# ---------------------------------------------------------------- node classification


def _node_graph(graph: Graph, train_cfg: TrainConfig) -> Graph:
    """The split's graph with features transformed, validated like full-graph training."""
    if graph.x is None:
        raise ValueError(f"graph {graph.name!r}: node classification needs features (Graph.x)")
    if graph.y is None or not np.issubdtype(graph.y.dtype, np.integer):
        raise ValueError(f"graph {graph.name!r}: node classification needs integer labels "
                         f"(Graph.y)")
    split = train_cfg.split
    if graph.num_splits == 0:
        raise ValueError(f"graph {graph.name!r}: Graph.train_mask is missing")
    if split >= max(graph.num_splits, 1):
        raise ValueError(f"TrainConfig.split: graph {graph.name!r} has {graph.num_splits} "
                         f"split(s), got {split}")
    g = prepare_features(graph.with_split(split), train_cfg)
    for name in ("train_mask", "val_mask", "test_mask"):
        mask = getattr(g, name)
        if mask is None or not mask.any():
            raise ValueError(f"graph {graph.name!r}: Graph.{name} of split {split} is missing "
                             f"or empty")
        if (g.y[mask] < 0).any():
            raise ValueError(f"graph {graph.name!r}: Graph.{name} of split {split} holds "
                             f"unlabelled nodes (y = -1)")
    return g


def _train_node(graph: Graph, model_cfg: ModelConfig, train_cfg: TrainConfig,
                cfg: SamplingConfig, prepare_model: PrepareModel | None,
                blocks_for: BlocksFor | None, progress: bool,
                distributed: DistContext | None) -> RunResult:
    from qgnn.training.distributed import agree, wrap_model

    started = time.perf_counter()
    g = _node_graph(graph, train_cfg)
    num_classes = g.num_classes
    check_model_config(model_cfg, g.num_features, num_classes)
    metric = node_metric(train_cfg.metric, num_classes)
    pipe = Pipeline(g, model_cfg, cfg)
    y = torch.from_numpy(g.y)
    train_ids = np.flatnonzero(g.train_mask)
    masks = {k: torch.from_numpy(getattr(g, f"{k}_mask")) for k in ("train", "val", "test")}
    rank = _rank(distributed)
    with seeded(train_cfg.seed):
        net: nn.Module = build_model(model_cfg)
        if prepare_model is not None:
            net = prepare_model(net)
        net = module_to_device(net, pipe.device, pipe.counter)
        model = wrap_model(net, distributed)
        optimiser, tracker, history = optimiser_and_tracker(model, train_cfg)
        epochs: list[EpochStats] = []
        per_epoch = math.ceil(_epoch_order(train_ids, 0, 0, distributed).size / cfg.batch_size)
        bar = _progress_bar(train_cfg.epochs * per_epoch, progress,
                            f"{model_cfg.model} {graph.name} {cfg.sampler}")

        def step(batch: DeviceBatch) -> float:
            model.train()
            blocks = per_layer_blocks(blocks_for, batch.blocks, True)
            logits = model(batch.x, blocks)
            return _optimise(model, optimiser, F.cross_entropy(logits, batch.payload["y"]))

        for epoch in range(train_cfg.epochs):
            pipe.begin_epoch(epoch, train_cfg.seed)
            batches = _split_batches(_epoch_order(train_ids, train_cfg.seed, epoch,
                                                  distributed), cfg.batch_size)

            def stage(b: int, batches: list[np.ndarray] = batches,
                      epoch: int = epoch) -> HostBatch:
                seeds = batches[b]
                rng = np.random.default_rng([train_cfg.seed, STREAM_BATCH, epoch, rank, b])
                return pipe.builder.build(seeds, rng, {"y": y[torch.from_numpy(seeds)]})

            stats = run_epoch(pipe, batches, stage, step, bar)
            epochs.append(stats)
            logits = _node_outputs(net, pipe, g, blocks_for, train_cfg.seed)
            val_loss = F.cross_entropy(logits[masks["val"]], y[masks["val"]]).item()
            row = {"epoch": epoch, **stats.row(), "val_loss": val_loss,
                   "train": score(metric, logits[masks["train"]], y[masks["train"]]),
                   "val": score(metric, logits[masks["val"]], y[masks["val"]])}
            history.append(row)
            tracker.update(epoch, row["val"], val_loss, net)
            if bar is not None:
                bar.set_postfix(loss=f"{stats.loss:.4f}", val=f"{row['val']:.4f}",
                                hit=f"{stats.hit_rate:.1%}")
            if agree(tracker.should_stop, distributed):
                break
        if bar is not None:
            bar.close()
        tracker.restore(net)
        logits = _node_outputs(net, pipe, g, blocks_for, train_cfg.seed)
    sc = {k: score(metric, logits[m], y[m]) for k, m in masks.items()}
    return RunResult(metric=metric, best_epoch=tracker.best_epoch, train_metric=sc["train"],
                     val_metric=sc["val"], test_metric=sc["test"], epochs_run=len(history),
                     seconds=time.perf_counter() - started, num_params=count_parameters(net),
                     history=history, extra_metrics=_summary_metrics(epochs), model=net)


def _node_outputs(net: nn.Module, pipe: Pipeline, g: Graph, blocks_for: BlocksFor | None,
                  seed: int) -> torch.Tensor:
    """Logits ``(N, C)`` on the host: exact layer-wise, or sampled for the labelled nodes
    (the other rows are 0)."""
    cfg = pipe.cfg
    if cfg.eval == "full":
        if not isinstance(net, GNN):
            raise ValueError(f"SamplingConfig.eval: 'full' runs the layers of a qgnn GNN one by "
                             f"one, got {type(net).__name__}; use eval='sampled'")
        return layerwise_inference(net, pipe.store.x, pipe.graph.csc, pipe.in_degree,
                                   pipe.device, pipe.counter, chunk_size=cfg.eval_batch_size,
                                   graph_edge_weight=g.edge_weight, blocks_for=blocks_for)
    net.eval()
    nodes = np.flatnonzero(g.train_mask | g.val_mask | g.test_mask)

    def encode(batch: DeviceBatch) -> torch.Tensor:
        return net(batch.x, per_layer_blocks(blocks_for, batch.blocks, False))

    out = sampled_inference(nodes, pipe.eval_builder(), encode, pipe.device, pipe.counter,
                            batch_size=cfg.eval_batch_size, seed=(seed, STREAM_EVAL),
                            workers=cfg.workers, depth=cfg.prefetch)
    logits = torch.zeros((g.num_nodes, out.shape[1]))
    logits[torch.from_numpy(nodes)] = out
    return logits


# ---------------------------------------------------------------- link prediction


class _LinkStep(nn.Module):
    """Encoder + decoder in one forward so DDP sees (and syncs) every parameter."""

    def __init__(self, model: LinkModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: DeviceBatch, blocks: list) -> tuple[torch.Tensor, torch.Tensor]:
        h = _encode(self.model, batch.x, blocks)
        return (self.model.score(h, batch.payload["pos"]),
                self.model.score(h, batch.payload["neg"]))


def _encode(model: LinkModel, x: torch.Tensor | None, blocks: list) -> torch.Tensor:
    if model.embedding is not None:
        x = model.embedding(blocks[0].src_ids)
    return model.encoder(x, blocks)


def _train_link(data: LinkData, model_cfg: ModelConfig, train_cfg: TrainConfig,
                cfg: SamplingConfig, prepare_model: PrepareModel | None,
                blocks_for: BlocksFor | None, progress: bool,
                distributed: DistContext | None) -> RunResult:
    from qgnn.training.distributed import agree, wrap_model

    started = time.perf_counter()
    data = data_for_model(data, model_cfg.model)
    graph = message_graph(data, data.graph)
    n = graph.num_nodes
    metric, items = check_link_task(data, graph, model_cfg, train_cfg)
    k = train_cfg.k
    pipe = Pipeline(graph, model_cfg, cfg)
    rank = _rank(distributed)
    pair_ids = np.arange(len(data.train), dtype=np.int64)
    with seeded(train_cfg.seed) as rng:
        eval_sets = {name: _eval_pairs(*pair) for name, pair in
                     eval_negatives(data, rng, items).items()}
        link_model = build_link_model(model_cfg, train_cfg.decoder,
                                      None if graph.x is not None else n)
        net: nn.Module = link_model
        if prepare_model is not None:
            net = prepare_model(net)
        if not isinstance(net, LinkModel):
            raise ValueError(f"prepare_model: must return the LinkModel it was given, got "
                             f"{type(net).__name__}")
        net = module_to_device(net, pipe.device, pipe.counter)
        model = wrap_model(_LinkStep(net), distributed)
        optimiser, tracker, history = optimiser_and_tracker(model, train_cfg)
        epochs: list[EpochStats] = []
        per_epoch = math.ceil(_epoch_order(pair_ids, 0, 0, distributed).size / cfg.batch_size)
        bar = _progress_bar(train_cfg.epochs * per_epoch, progress,
                            f"{model_cfg.model} {graph.name} link {cfg.sampler}")

        def step(batch: DeviceBatch) -> float:
            model.train()
            pos, neg = model(batch, per_layer_blocks(blocks_for, batch.blocks, True))
            return _optimise(model, optimiser, link_loss(pos, neg, train_cfg.loss))

        for epoch in range(train_cfg.epochs):
            pipe.begin_epoch(epoch, train_cfg.seed)
            batches = _split_batches(_epoch_order(pair_ids, train_cfg.seed, epoch, distributed),
                                     cfg.batch_size)

            def stage(b: int, batches: list[np.ndarray] = batches,
                      epoch: int = epoch) -> HostBatch:
                batch_rng = np.random.default_rng([train_cfg.seed, STREAM_BATCH, epoch, rank, b])
                pos = data.train[batches[b]]
                neg = sample_negatives(pos, batch_rng, n, items, train_cfg.negatives)
                seeds = np.unique(np.concatenate([pos.reshape(-1), neg.reshape(-1)]))
                local = {"pos": torch.from_numpy(np.searchsorted(seeds, pos)),
                         "neg": torch.from_numpy(np.searchsorted(seeds, neg))}
                return pipe.builder.build(seeds, batch_rng, local)

            stats = run_epoch(pipe, batches, stage, step, bar)
            epochs.append(stats)
            h, scorer = _link_embeddings(net, pipe, graph, blocks_for, train_cfg.seed)
            val_logits = scorer.score(h, eval_sets["val"][0])
            val_loss = F.binary_cross_entropy_with_logits(val_logits, eval_sets["val"][1]).item()
            val = split_score(metric, scorer, h, val_logits, eval_sets["val"][1], data, k,
                              test=False)
            history.append({"epoch": epoch, **stats.row(), "val_loss": val_loss, "val": val})
            tracker.update(epoch, val, val_loss, net)
            if bar is not None:
                bar.set_postfix(loss=f"{stats.loss:.4f}", val=f"{val:.4f}",
                                hit=f"{stats.hit_rate:.1%}")
            if agree(tracker.should_stop, distributed):
                break
        if bar is not None:
            bar.close()
        tracker.restore(net)
        h, scorer = _link_embeddings(net, pipe, graph, blocks_for, train_cfg.seed)
        val_logits = scorer.score(h, eval_sets["val"][0])
        test_logits = scorer.score(h, eval_sets["test"][0])
        val = split_score(metric, scorer, h, val_logits, eval_sets["val"][1], data, k,
                          test=False)
        extra = final_metrics(scorer, h, data, k, {"val": val_logits, "test": test_logits},
                              {"val": eval_sets["val"][1], "test": eval_sets["test"][1]})
    name = metric_name(metric, k)
    return RunResult(metric=name, best_epoch=tracker.best_epoch, train_metric=None,
                     val_metric=val, test_metric=extra[f"test_{name}"], epochs_run=len(history),
                     seconds=time.perf_counter() - started, num_params=count_parameters(net),
                     history=history, extra_metrics={**extra, **_summary_metrics(epochs)},
                     model=net)


def _eval_pairs(pos: np.ndarray, neg: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.float32)
    return torch.from_numpy(np.concatenate([pos, neg])), torch.from_numpy(labels)


class _HostScorer(nn.Module):
    """A host copy of the decoder: evaluation scores and ranks pairs on the host, where the
    embeddings are, whatever device training runs on (``rank_items`` reads ``.decoder``)."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = copy.deepcopy(decoder).to("cpu").eval()

    def score(self, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return self.decoder(h[pairs[:, 0]], h[pairs[:, 1]])


@torch.no_grad()
def _link_embeddings(net: LinkModel, pipe: Pipeline, graph: Graph, blocks_for: BlocksFor | None,
                     seed: int) -> tuple[torch.Tensor, _HostScorer]:
    """Embeddings ``(N, D)`` of every node on the host, and a host scorer for them."""
    net.eval()
    cfg = pipe.cfg
    if cfg.eval == "full":
        x = pipe.store.x if net.embedding is None else net.embedding.weight.detach().cpu()
        h = layerwise_inference(net.encoder, x, pipe.graph.csc, pipe.in_degree, pipe.device,
                                pipe.counter, chunk_size=cfg.eval_batch_size,
                                graph_edge_weight=graph.edge_weight, blocks_for=blocks_for)
    else:
        def encode(batch: DeviceBatch) -> torch.Tensor:
            return _encode(net, batch.x, per_layer_blocks(blocks_for, batch.blocks, False))

        h = sampled_inference(np.arange(graph.num_nodes, dtype=np.int64), pipe.eval_builder(),
                              encode, pipe.device, pipe.counter, batch_size=cfg.eval_batch_size,
                              seed=(seed, STREAM_EVAL), workers=cfg.workers,
                              depth=cfg.prefetch)
    return h, _HostScorer(net.decoder)
