"""Evaluation metrics as plain functions over numpy arrays or torch tensors.

Every function returns a Python float. The ranking metrics (Recall@K, NDCG@K, HitRate@K, OGB's
Hits@K) live in ``qgnn.graph.ranking`` (numpy only, so the torch-free serving side scores a bundle
with the same definitions) and are re-exported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qgnn.graph.ranking import (  # noqa: F401  (re-exported)
    hit_rate_at_k,
    hits_at_k,
    ndcg_at_k,
    ranking_hits,
    ranking_metrics,
    recall_at_k,
)


def _np(value: Any) -> np.ndarray:
    """A numpy view of a numpy array, a torch tensor (any device) or a list."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def accuracy(scores: Any, labels: Any) -> float:
    """Fraction of correct predictions.

    ``scores`` is ``(N, C)`` logits/probabilities (the argmax is the prediction) or ``(N,)``
    predicted labels; ``labels`` is ``(N,)`` integer classes.
    """
    s, y = _np(scores), _np(labels)
    pred = s.argmax(axis=1) if s.ndim == 2 else s
    if pred.shape != y.shape or y.ndim != 1:
        raise ValueError(f"accuracy: scores {s.shape} do not match labels {y.shape}")
    if y.size == 0:
        raise ValueError("accuracy: no labels to score")
    return float((pred == y).mean())


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of a binary task, from ranks (Mann-Whitney U).

    ``scores`` ``(N,)`` (higher = more positive) or ``(N, 2)`` class scores (column 1 is used);
    ``labels`` ``(N,)`` in {0, 1}. Tied scores get their average rank, so a tie between a positive
    and a negative counts one half, as the trapezoidal ROC area does.
    """
    s, y = _np(scores), _np(labels)
    if s.ndim == 2:
        if s.shape[1] != 2:
            raise ValueError(f"roc_auc: expected (N,) or (N, 2) scores, got {s.shape}")
        s = s[:, 1]
    if s.shape != y.shape or y.ndim != 1:
        raise ValueError(f"roc_auc: scores {s.shape} do not match labels {y.shape}")
    y = y.astype(np.int64)
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"roc_auc: labels must be 0/1, got values {np.unique(y)[:5].tolist()}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc: needs both classes, got {n_pos} positives and {n_neg} "
                         f"negatives")
    ranks = average_ranks(s.astype(np.float64))
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` ``(N,)``, ties sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # rank of the last member of each tie group
    mean_rank = ends - (counts - 1) / 2.0
    return mean_rank[inverse.reshape(-1)]
