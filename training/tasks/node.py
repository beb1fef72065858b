"""Full-graph node classification: one forward pass over the whole graph per epoch.

Hooks for quantisation-aware training: ``prepare_model`` rewrites the model before the optimiser
sees its parameters (swap in quantising sites), and ``blocks_for`` rewrites the block for each
pass (Degree-Quant draws a fresh protection mask per training pass).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from qgnn.graph.container import Graph
from qgnn.training.data import NodeData, node_data
from qgnn.training.metrics import accuracy, roc_auc
from qgnn.training.nn.block import Block
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.presets import TrainConfig
from qgnn.training.progress import BestTracker, RunResult, count_parameters, epoch_bar, seeded
from torch import nn
from torch.nn import functional as F

PrepareModel = Callable[[nn.Module], nn.Module]
# (block, training) -> the block, or one block per layer, for this pass
BlocksFor = Callable[[Block, bool], Block | Sequence[Block]]
# called between backward and the optimiser step (edge-sharded training averages gradients)
SyncGrads = Callable[[nn.Module], None]


def same_block(block: Block, training: bool) -> Block:
    """The default ``blocks_for``: every pass sees the block unchanged."""
    return block


def node_metric(name: str, num_classes: int) -> str:
    """Resolve ``"auto"``: ROC-AUC for binary tasks (class 1 = positive), accuracy otherwise."""
    if name == "auto":
        return "roc_auc" if num_classes == 2 else "accuracy"
    if name == "roc_auc" and num_classes != 2:
        raise ValueError(f"TrainConfig.metric: roc_auc needs two classes, the graph has "
                         f"{num_classes}")
    return name


def score(metric: str, logits: torch.Tensor, labels: torch.Tensor) -> float:
    if metric == "roc_auc":
        return roc_auc(torch.softmax(logits, dim=1)[:, 1], labels)
    return accuracy(logits, labels)


def check_model_config(cfg: ModelConfig, num_features: int, num_classes: int) -> None:
    if cfg.in_dim != num_features:
        raise ValueError(f"ModelConfig.in_dim: the graph has {num_features} features, got "
                         f"{cfg.in_dim}")
    if cfg.out_dim != num_classes:
        raise ValueError(f"ModelConfig.out_dim: the graph has {num_classes} classes, got "
                         f"{cfg.out_dim}")


def prepare_features(graph: Graph, train_cfg: TrainConfig) -> Graph:
    """Apply the feature transforms the configuration asks for (row normalisation)."""
    if not train_cfg.row_normalize:
        return graph
    from qgnn.graph.transforms import row_normalize

    return row_normalize(graph)


def optimiser_and_tracker(model: nn.Module, train_cfg: TrainConfig
                          ) -> tuple[torch.optim.Optimizer, BestTracker, list[dict[str, float]]]:
    """What every training loop starts with: Adam over ``model``, the early-stopping tracker and
    an empty per-epoch history (one place, so the tasks cannot drift apart)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=train_cfg.lr,
                                 weight_decay=train_cfg.weight_decay)
    return optimiser, BestTracker(train_cfg.patience), []


def train_node(graph: Graph, model_cfg: ModelConfig, train_cfg: TrainConfig, *,
               prepare_model: PrepareModel | None = None, blocks_for: BlocksFor | None = None,
               sync_grads: SyncGrads | None = None, progress: bool = True) -> RunResult:
    """Train ``model_cfg`` on split ``train_cfg.split`` of ``graph`` and evaluate the best epoch.

    The best epoch is the one with the highest validation metric (ties: lower validation loss);
    its parameters are restored into ``RunResult.model`` before the test metric is computed.
    ``sync_grads(model)`` runs after every backward pass, before the optimiser step.
    """
    blocks_for = blocks_for or same_block
    started = time.perf_counter()
    data = node_data(prepare_features(graph, train_cfg), train_cfg.split)
    check_model_config(model_cfg, data.num_features, data.num_classes)
    metric = node_metric(train_cfg.metric, data.num_classes)
    with seeded(train_cfg.seed):
        model = build_model(model_cfg)
        if prepare_model is not None:
            model = prepare_model(model)
        optimiser, tracker, history = optimiser_and_tracker(model, train_cfg)
        bar = epoch_bar(train_cfg.epochs, progress, f"{model_cfg.model} {graph.name}")
        for epoch in bar:
            loss = _train_step(model, optimiser, data, blocks_for, sync_grads)
            logits = _evaluate(model, data, blocks_for)
            val_loss = F.cross_entropy(logits[data.val_mask], data.y[data.val_mask]).item()
            row = {"epoch": epoch, "loss": loss, "val_loss": val_loss,
                   "train": score(metric, logits[data.train_mask], data.y[data.train_mask]),
                   "val": score(metric, logits[data.val_mask], data.y[data.val_mask])}
            history.append(row)
            tracker.update(epoch, row["val"], val_loss, model)
            if progress:
                bar.set_postfix(loss=f"{loss:.4f}", val=f"{row['val']:.4f}",
                                best=f"{tracker.best_metric:.4f}")
            if tracker.should_stop:
                break
        if progress:
            bar.close()
        tracker.restore(model)
        logits = _evaluate(model, data, blocks_for)
    return RunResult(
        metric=metric, best_epoch=tracker.best_epoch,
        train_metric=score(metric, logits[data.train_mask], data.y[data.train_mask]),
        val_metric=score(metric, logits[data.val_mask], data.y[data.val_mask]),
        test_metric=score(metric, logits[data.test_mask], data.y[data.test_mask]),
        epochs_run=len(history), seconds=time.perf_counter() - started,
        num_params=count_parameters(model), history=history, model=model)


def _train_step(model: nn.Module, optimiser: torch.optim.Optimizer, data: NodeData,
                blocks_for: BlocksFor, sync_grads: SyncGrads | None = None) -> float:
    model.train()
    optimiser.zero_grad(set_to_none=True)
    logits = model(data.x, blocks_for(data.block, True))
    loss = F.cross_entropy(logits[data.train_mask], data.y[data.train_mask])
    if not torch.isfinite(loss):
        raise ValueError(f"training loss became {loss.item()}; lower TrainConfig.lr (--lr)")
    loss.backward()
    if sync_grads is not None:
        sync_grads(model)
    optimiser.step()
    return float(loss.item())


@torch.no_grad()
def _evaluate(model: nn.Module, data: NodeData, blocks_for: BlocksFor) -> torch.Tensor:
    model.eval()
    return model(data.x, blocks_for(data.block, False))


def node_model_config(graph: Graph, model: str, **fields: Any) -> ModelConfig:
    """A :class:`ModelConfig` whose input/output sizes match ``graph``."""
    if graph.x is None:
        raise ValueError(f"graph {graph.name!r}: node classification needs features (Graph.x)")
    return ModelConfig(model=model, in_dim=graph.num_features, out_dim=graph.num_classes,
                       **fields)

