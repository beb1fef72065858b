"""Link prediction: a GNN encoder embeds nodes, a decoder scores pairs.

Training pairs are the positives; each epoch draws ``negatives`` negatives per positive by
corrupting the destination (uniformly over all nodes, or over the item side of a bipartite
graph), scored with BCE, BPR or a sampled softmax. Validation and test negatives are drawn once
per run, never from known positives, unless the dataset fixes them (OGB's, scored by Hits@k).
Bipartite data is also scored as top-k recommendation: every user's items are ranked with the
training interactions (and, for test, validation ones) left out, as in LightGCN's protocol (He
et al., SIGIR 2020), next to the most-popular baseline ranked the same way.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from qgnn.graph.container import Graph
from qgnn.graph.links import LinkData
from qgnn.graph.ranking import most_popular_scores
from qgnn.training.data import as_tensor
from qgnn.training.metrics import (
    hit_rate_at_k,
    hits_at_k,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
    roc_auc,
)
from qgnn.training.nn.block import Block, full_graph_block
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.presets import TrainConfig
from qgnn.training.progress import RunResult, count_parameters, epoch_bar, seeded
from qgnn.training.tasks.node import (
    BlocksFor,
    PrepareModel,
    optimiser_and_tracker,
    prepare_features,
    same_block,
)
from torch import nn
from torch.nn import functional as F

# Scores of at most this many (user, item, dim) products are held at once when ranking.
RANKING_CHUNK = 1 << 22


class DotDecoder(nn.Module):
    """``score(u, v) = h_u · h_v``."""

    def forward(self, h_src: torch.Tensor, h_dst: torch.Tensor) -> torch.Tensor:
        """Aligned pairs: ``(M, D), (M, D) -> (M,)``."""
        return (h_src * h_dst).sum(-1)

    def all_pairs(self, h_src: torch.Tensor, h_dst: torch.Tensor) -> torch.Tensor:
        """Every combination: ``(U, D), (I, D) -> (U, I)``."""
        return h_src @ h_dst.t()


class MLPDecoder(nn.Module):
    """``score(u, v) = MLP(h_u ⊙ h_v)``: symmetric in u and v, one hidden layer."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, h_src: torch.Tensor, h_dst: torch.Tensor) -> torch.Tensor:
        """Aligned pairs: ``(M, D), (M, D) -> (M,)``."""
        return self.mlp(h_src * h_dst).squeeze(-1)

    def all_pairs(self, h_src: torch.Tensor, h_dst: torch.Tensor) -> torch.Tensor:
        """Every combination: ``(U, D), (I, D) -> (U, I)``."""
        return self(h_src[:, None, :], h_dst[None, :, :])


class LinkModel(nn.Module):
    """Encoder GNN + pair decoder; a learnable embedding table stands in for missing features."""

    def __init__(self, model_cfg: ModelConfig, decoder: str, num_embeddings: int | None) -> None:
        super().__init__()
        self.embedding = (None if num_embeddings is None
                          else nn.Embedding(num_embeddings, model_cfg.in_dim))
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, std=0.1)
        self.encoder = build_model(model_cfg)
        if decoder == "dot":
            self.decoder: nn.Module = DotDecoder()
        elif decoder == "mlp":
            self.decoder = MLPDecoder(model_cfg.out_dim, model_cfg.hidden)
        else:
            raise ValueError(f"TrainConfig.decoder: expected 'dot' or 'mlp', got {decoder!r}")

    def forward(self, x: torch.Tensor | None, blocks: Block | Sequence[Block]) -> torch.Tensor:
        """Node embeddings ``(N, out_dim)``."""
        if self.embedding is not None:
            x = self.embedding.weight
        return self.encoder(x, blocks)

    def score(self, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Logits ``(M,)`` of ``pairs`` ``(M, 2)`` from embeddings ``h``."""
        return self.decoder(h[pairs[:, 0]], h[pairs[:, 1]])


def sample_negatives(pairs: np.ndarray, rng: np.random.Generator, num_nodes: int,
                     item_range: tuple[int, int] | None = None, count: int = 1,
                     uniform_pairs: bool = False) -> np.ndarray:
    """``count`` negatives per positive ``(M, 2)`` -> ``(M * count, 2)``, positive ``i``'s at
    rows ``i * count .. i * count + count - 1``: keep the source, draw the destination uniformly
    (``uniform_pairs``: draw the source uniformly too, OGB's sampling on homogeneous graphs).

    ``item_range = (first, end)`` draws destinations from the item side of a bipartite graph.
    Training negatives are not checked against positives (a collision is rare and only adds
    label noise), which keeps this O(M).
    """
    low, high = item_range if item_range is not None else (0, num_nodes)
    if uniform_pairs:
        if item_range is not None:
            raise ValueError("negative_pairs='uniform' draws both ends from all nodes; a "
                             "user-item graph needs 'source' (users keep their side)")
        src = rng.integers(0, num_nodes, size=len(pairs) * count)
        return np.stack([src, rng.integers(0, num_nodes, size=len(src))], axis=1)
    src = pairs[:, 0] if count == 1 else np.repeat(pairs[:, 0], count)
    return np.stack([src, rng.integers(low, high, size=len(src))], axis=1)


def link_loss(pos: torch.Tensor, neg: torch.Tensor, loss_name: str) -> torch.Tensor:
    """The training loss of positive logits ``(M,)`` against their negatives ``(M * c,)``
    (grouped per positive, as :func:`sample_negatives` draws them).

    ``bce``: binary cross-entropy, positives 1 and negatives 0. ``bpr``: ``-log sigmoid(pos -
    neg)`` over each (positive, negative) pair (Rendle et al., UAI 2009). ``softmax``: sampled
    softmax, each positive's cross-entropy against its ``c`` negatives.
    """
    neg = neg.reshape(len(pos), -1)
    if loss_name == "bpr":
        return -F.logsigmoid(pos[:, None] - neg).mean()
    if loss_name == "softmax":
        logits = torch.cat([pos[:, None], neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))
    if loss_name != "bce":
        raise ValueError(f"TrainConfig.loss: expected bce, bpr or softmax, got {loss_name!r}")
    logits = torch.cat([pos, neg.reshape(-1)])
    labels = torch.cat([torch.ones_like(pos), torch.zeros(neg.numel())])
    return F.binary_cross_entropy_with_logits(logits, labels)


def sample_non_edges(pairs: np.ndarray, rng: np.random.Generator, num_nodes: int,
                     known: np.ndarray, item_range: tuple[int, int] | None = None) -> np.ndarray:
    """Negatives for evaluation: like :func:`sample_negatives`, but never a known positive pair
    (``known``: sorted int64 keys ``src * num_nodes + dst`` of every positive, both directions)
    nor a self-loop. Redraws only the offending rows: first their destination; then, for a
    source linked to (nearly) every candidate, the source too (another positive's source), so a
    user who has every item does not make the evaluation impossible."""
    neg = sample_negatives(pairs, rng, num_nodes, item_range)
    low, high = item_range if item_range is not None else (0, num_nodes)
    for attempt in range(200):
        bad = (neg[:, 0] == neg[:, 1]) | np.isin(neg[:, 0] * num_nodes + neg[:, 1], known)
        if not bad.any():
            return neg
        if attempt >= 100:
            neg[bad, 0] = pairs[rng.integers(0, len(pairs), size=int(bad.sum())), 0]
        neg[bad, 1] = rng.integers(low, high, size=int(bad.sum()))
    raise ValueError("sample_non_edges: could not find negatives that are not edges; the graph "
                     "is too dense for negative sampling")


def pair_keys(num_nodes: int, *pair_sets: np.ndarray) -> np.ndarray:
    """Sorted unique keys of every pair in both directions."""
    both = np.concatenate([np.concatenate([p, p[:, ::-1]]) for p in pair_sets])
    return np.unique(both[:, 0] * num_nodes + both[:, 1])


@dataclass(frozen=True, eq=False)
class _EvalPairs:
    """A fixed evaluation set: positives then as many negatives, with 1/0 labels."""

    pairs: torch.Tensor  # (2M, 2)
    labels: torch.Tensor  # (2M,) float

    @classmethod
    def build(cls, pos: np.ndarray, neg: np.ndarray) -> _EvalPairs:
        labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.float32)
        return cls(torch.from_numpy(np.concatenate([pos, neg])), torch.from_numpy(labels))


def link_metric(data: LinkData, name: str) -> str:
    """``"auto"``: Recall@k for bipartite data, OGB Hits@k for data with fixed evaluation
    negatives, ROC-AUC otherwise."""
    if name == "auto":
        return "recall" if data.bipartite else "hits" if data.val_neg is not None else "roc_auc"
    if name not in ("roc_auc", "recall", "ndcg", "hit_rate", "hits"):
        raise ValueError(f"TrainConfig.metric: link prediction takes auto, roc_auc, recall, "
                         f"ndcg, hit_rate or hits, got {name!r}")
    if name in ("recall", "ndcg", "hit_rate") and not data.bipartite:
        raise ValueError(f"TrainConfig.metric: {name} ranks items and needs bipartite data")
    return name


def metric_name(metric: str, k: int) -> str:
    return metric if metric == "roc_auc" else f"{metric}@{k}"


def eval_negatives(data: LinkData, rng: np.random.Generator,
                   items: tuple[int, int] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"val": (pos, neg), "test": (pos, neg)}``: the dataset's fixed negatives where it has
    them (OGB), else one drawn non-edge per positive."""
    n = data.graph.num_nodes
    if data.val_neg is not None and data.test_neg is not None:
        return {"val": (data.val, data.val_neg), "test": (data.test, data.test_neg)}
    known = pair_keys(n, data.train, data.val, data.test)
    return {name: (pos, sample_non_edges(pos, rng, n, known, items))
            for name, pos in (("val", data.val), ("test", data.test))}


@torch.no_grad()
def split_score(metric: str, scorer: Any, h: torch.Tensor, logits: torch.Tensor,
                labels: torch.Tensor, data: LinkData, k: int, *, test: bool) -> float:
    """The selection metric of one split from its pair logits (positives labelled 1)."""
    if metric == "roc_auc":
        return roc_auc(logits, labels)
    if metric == "hits":
        pos = labels > 0.5
        return hits_at_k(logits[pos], logits[~pos], k)
    ranked, truth = rank_items(scorer, h, data, k, test=test)
    fn = {"recall": recall_at_k, "ndcg": ndcg_at_k, "hit_rate": hit_rate_at_k}[metric]
    return fn(ranked, truth, k)


@torch.no_grad()
def final_metrics(scorer: Any, h: torch.Tensor, data: LinkData, k: int,
                  logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                  ) -> dict[str, float]:
    """Every evaluation figure of the selected model: ROC-AUC and OGB Hits@k of the test
    pairs; on bipartite data Recall, NDCG and HitRate@k on validation and test, and the
    most-popular baseline's (training interaction counts) ranked the same way."""
    extra: dict[str, float] = {}
    for split in ("val", "test"):
        pos = labels[split] > 0.5
        extra[f"{split}_roc_auc"] = roc_auc(logits[split], labels[split])
        extra[f"{split}_hits@{k}"] = hits_at_k(logits[split][pos], logits[split][~pos], k)
    if data.bipartite:
        popularity = torch.from_numpy(most_popular_scores(
            data.train[:, 1] - data.num_users, data.num_items))
        for split in ("val", "test"):
            ranked, truth = rank_items(scorer, h, data, k, test=split == "test")
            extra.update({f"{split}_{name}": value
                          for name, value in ranking_metrics(ranked, truth, k).items()})
            ranked, truth = rank_items(None, h, data, k, test=split == "test",
                                       item_scores=popularity)
            extra.update({f"{split}_most_popular_{name}": value
                          for name, value in ranking_metrics(ranked, truth, k).items()})
    return extra


def data_for_model(data: LinkData, model: str) -> LinkData:
    """``data`` as ``model`` reads it: LightGCN-style (layer-mean, weight-free) models learn one
    embedding per node and ignore node features, which they have no weights to project."""
    from qgnn.contract.layers import layer_spec

    if not layer_spec(model).layer_mean or data.graph.x is None:
        return data
    return dataclasses.replace(data, graph=data.graph.replace(x=None))


def link_model_config(data: LinkData, model: str, *, hidden: int = 64, embedding_dim: int = 64,
                      **fields: Any) -> ModelConfig:
    """A :class:`ModelConfig` for ``data``: features in, ``hidden``-wide embeddings out.

    Graphs without features get a learnable ``embedding_dim``-wide embedding per node
    (``hidden``-wide for LightGCN, whose layers keep the width).
    """
    from qgnn.contract.layers import layer_spec

    graph = data_for_model(data, model).graph
    if layer_spec(model).layer_mean:
        embedding_dim = hidden
    in_dim = graph.num_features if graph.x is not None else embedding_dim
    return ModelConfig(model=model, in_dim=in_dim, out_dim=hidden, hidden=hidden, **fields)


def check_link_task(data: LinkData, graph: Graph, model_cfg: ModelConfig,
                    train_cfg: TrainConfig) -> tuple[str, tuple[int, int] | None]:
    """Refuses a link task that cannot train (feature width, empty pair sets, k beyond the
    items); returns its metric and, for bipartite data, the item id range."""
    if graph.x is not None and model_cfg.in_dim != graph.num_features:
        raise ValueError(f"ModelConfig.in_dim: the graph has {graph.num_features} features, got "
                         f"{model_cfg.in_dim}")
    if len(data.train) == 0 or len(data.val) == 0 or len(data.test) == 0:
        raise ValueError(f"LinkData: needs train, val and test pairs, got {len(data.train)}, "
                         f"{len(data.val)}, {len(data.test)}")
    metric = link_metric(data, train_cfg.metric)
    items = (data.num_users, graph.num_nodes) if data.bipartite else None
    if items is not None and train_cfg.k > items[1] - items[0]:
        raise ValueError(f"TrainConfig.k: {train_cfg.k} exceeds the {items[1] - items[0]} "
                         f"items")
    return metric, items


def build_link_model(model_cfg: ModelConfig, decoder: str,
                     num_embeddings: int | None) -> LinkModel:
    return LinkModel(model_cfg, decoder, num_embeddings)


def message_graph(data: LinkData, graph: Graph) -> Graph:
    """The graph messages flow over: user-item ratings (``weighted`` interactions) stay data
    (the bundle's ``graph/edge_weight.npy``) and do not scale messages, so the exported model,
    which takes no edge weights, computes what training did; other graphs keep their weights."""
    if data.bipartite and graph.edge_weight is not None:
        return graph.replace(edge_weight=None)
    return graph


def train_link(data: LinkData, model_cfg: ModelConfig, train_cfg: TrainConfig, *,
               prepare_model: PrepareModel | None = None, blocks_for: BlocksFor | None = None,
               progress: bool = True) -> RunResult:
    """Train an encoder/decoder on ``data.train`` pairs, select by validation, score test.

    ``RunResult.extra_metrics`` also holds the test ROC-AUC and, for bipartite data, the test
    Recall@k and NDCG@k. The model is a :class:`LinkModel`; graphs without features train an
    embedding table (``num_embeddings`` = number of nodes).
    """
    blocks_for = blocks_for or same_block
    started = time.perf_counter()
    data = data_for_model(data, model_cfg.model)
    graph = data.graph if data.graph.x is None else prepare_features(data.graph, train_cfg)
    graph = message_graph(data, graph)
    n = graph.num_nodes
    metric, items = check_link_task(data, graph, model_cfg, train_cfg)
    k = train_cfg.k
    x = None if graph.x is None else as_tensor(graph.x, np.float32)
    block = full_graph_block(graph)
    train_pairs = data.train
    with seeded(train_cfg.seed) as rng:
        sets = eval_negatives(data, rng, items)
        val_set, test_set = _EvalPairs.build(*sets["val"]), _EvalPairs.build(*sets["test"])
        model: nn.Module = build_link_model(model_cfg, train_cfg.decoder,
                                            None if graph.x is not None else n)
        if prepare_model is not None:
            model = prepare_model(model)
        optimiser, tracker, history = optimiser_and_tracker(model, train_cfg)
        bar = epoch_bar(train_cfg.epochs, progress, f"{model_cfg.model} {graph.name} link")
        for epoch in bar:
            loss = _train_epoch(model, optimiser, x, block, train_pairs, rng, n, items,
                                train_cfg, blocks_for)
            h = _embed(model, x, block, blocks_for)
            with torch.no_grad():
                val_logits = model.score(h, val_set.pairs)
            val_loss = F.binary_cross_entropy_with_logits(val_logits, val_set.labels).item()
            val = split_score(metric, model, h, val_logits, val_set.labels, data, k,
                              test=False)
            history.append({"epoch": epoch, "loss": loss, "val_loss": val_loss, "val": val})
            tracker.update(epoch, val, val_loss, model)
            if progress:
                bar.set_postfix(loss=f"{loss:.4f}", val=f"{val:.4f}",
                                best=f"{tracker.best_metric:.4f}")
            if tracker.should_stop:
                break
        if progress:
            bar.close()
        tracker.restore(model)
        h = _embed(model, x, block, blocks_for)
    with torch.no_grad():
        val_logits, test_logits = model.score(h, val_set.pairs), model.score(h, test_set.pairs)
    val = split_score(metric, model, h, val_logits, val_set.labels, data, k, test=False)
    extra = final_metrics(model, h, data, k, {"val": val_logits, "test": test_logits},
                          {"val": val_set.labels, "test": test_set.labels})
    name = metric_name(metric, k)
    return RunResult(
        metric=name, best_epoch=tracker.best_epoch, train_metric=None, val_metric=val,
        test_metric=extra[f"test_{name}"], epochs_run=len(history),
        seconds=time.perf_counter() - started, num_params=count_parameters(model),
        history=history, extra_metrics=extra, model=model)


def _train_epoch(model: nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor | None,
                 block: Block, train_pairs: np.ndarray, rng: np.random.Generator, n: int,
                 items: tuple[int, int] | None, cfg: TrainConfig, blocks_for: BlocksFor,
                 ) -> float:
    """One pass over the training pairs: a single full-batch step, or with
    ``link_batch_size`` one step per shuffled batch (each a full-graph forward, as OGB's ddi
    example trains); the mean loss weighted by batch size."""
    if cfg.link_batch_size is None or cfg.link_batch_size >= len(train_pairs):
        batches = [train_pairs]
    else:
        shuffled = train_pairs[rng.permutation(len(train_pairs))]
        batches = [shuffled[s:s + cfg.link_batch_size]
                   for s in range(0, len(shuffled), cfg.link_batch_size)]
    total = 0.0
    for pairs in batches:
        neg = torch.from_numpy(sample_negatives(pairs, rng, n, items, cfg.negatives,
                                                cfg.negative_pairs == "uniform"))
        total += len(pairs) * _train_step(model, optimiser, x, block, torch.from_numpy(pairs),
                                          neg, cfg, blocks_for)
    return total / len(train_pairs)


def _train_step(model: nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor | None,
                block: Block, pos: torch.Tensor, neg: torch.Tensor, cfg: TrainConfig,
                blocks_for: BlocksFor) -> float:
    model.train()
    optimiser.zero_grad(set_to_none=True)
    h = model(x, blocks_for(block, True))
    loss = link_loss(model.score(h, pos), model.score(h, neg), cfg.loss)
    if not torch.isfinite(loss):
        raise ValueError(f"training loss became {loss.item()}; lower TrainConfig.lr (--lr)")
    loss.backward()
    if cfg.clip_grad_norm is not None:  # per part (embedding, encoder, decoder), as OGB's
        for part in model.children():  # ddi example clips each of them
            grads = [p for p in part.parameters() if p.grad is not None]
            if grads:
                torch.nn.utils.clip_grad_norm_(grads, cfg.clip_grad_norm)
    optimiser.step()
    return float(loss.item())


@torch.no_grad()
def _embed(model: nn.Module, x: torch.Tensor | None, block: Block,
           blocks_for: BlocksFor) -> torch.Tensor:
    model.eval()
    return model(x, blocks_for(block, False))


@torch.no_grad()
def rank_items(model: Any, h: torch.Tensor, data: LinkData, k: int, *,
               test: bool, item_scores: torch.Tensor | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items ``(U', k)`` for each user with held-out pairs, and those pairs as
    ``(row, item)``; seen interactions (train, plus val when ranking for test) are excluded.
    ``item_scores`` ``(I,)`` ranks every user by the same item scores (a baseline) instead of
    the model's decoder."""
    held = data.test if test else data.val
    seen = np.concatenate([data.train, data.val]) if test else data.train
    users, rows = np.unique(held[:, 0], return_inverse=True)
    first_item = data.num_users
    h_items = h[first_item:]
    # seen pairs of the ranked users, as (row, item column), sorted by row
    row_of = np.full(data.num_users, -1, np.int64)
    row_of[users] = np.arange(len(users))
    seen_rows = row_of[seen[:, 0]]
    keep = seen_rows >= 0
    order = np.argsort(seen_rows[keep], kind="stable")
    seen_rows, seen_cols = seen_rows[keep][order], seen[keep, 1][order] - first_item
    chunk = max(1, RANKING_CHUNK // max(1, h_items.shape[0] * h.shape[1]))
    ranked = np.empty((len(users), k), np.int64)
    for start in range(0, len(users), chunk):
        stop = min(start + chunk, len(users))
        if item_scores is not None:
            scores = item_scores[None, :].repeat(stop - start, 1).to(torch.float64)
        else:
            scores = model.decoder.all_pairs(h[torch.from_numpy(users[start:stop])], h_items)
        lo, hi = np.searchsorted(seen_rows, [start, stop])
        scores[torch.from_numpy(seen_rows[lo:hi] - start),
               torch.from_numpy(seen_cols[lo:hi])] = -float("inf")
        ranked[start:stop] = scores.topk(k, dim=1).indices.numpy() + first_item
    return ranked, np.stack([rows.reshape(-1), held[:, 1]], axis=1)
