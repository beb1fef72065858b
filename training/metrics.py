"""Evaluation metrics as plain functions over numpy arrays or torch tensors.

Every function returns a Python float. Ranking metrics follow the LightGCN / NGCF convention
(He et al., SIGIR 2020): Recall@K divides the hits in the top K by the number of held-out items,
NDCG@K divides by the ideal DCG of ``min(K, |held-out|)`` hits, and users with no held-out item
are left out of the mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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


def ranking_hits(ranked: Any, relevant: Any) -> tuple[np.ndarray, np.ndarray]:
    """Which recommended items are held-out positives.

    ``ranked`` ``(U, K)``: item ids per user row, best first. ``relevant`` ``(M, 2)``: held-out
    ``(row, item)`` pairs with ``row`` in ``[0, U)``. Returns ``hits`` ``(U, K)`` bool and
    ``num_relevant`` ``(U,)`` (distinct held-out items per row).
    """
    r, rel = _np(ranked), _np(relevant)
    if r.ndim != 2 or not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"ranked: expected (U, K) integer item ids, got {r.shape} {r.dtype}")
    if rel.ndim != 2 or rel.shape[1] != 2 or not np.issubdtype(rel.dtype, np.integer):
        raise ValueError(f"relevant: expected (M, 2) integer (row, item) pairs, got {rel.shape} "
                         f"{rel.dtype}")
    num_users = r.shape[0]
    if rel.size and (rel[:, 0].min() < 0 or rel[:, 0].max() >= num_users):
        raise ValueError(f"relevant: user rows must lie in [0, {num_users}), got "
                         f"{int(rel[:, 0].min())}..{int(rel[:, 0].max())}")
    width = int(max(r.max(initial=0), rel[:, 1].max(initial=0))) + 1
    rel_keys = np.unique(rel[:, 0].astype(np.int64) * width + rel[:, 1])
    rows = np.arange(num_users, dtype=np.int64)[:, None]
    hits = np.isin(rows * width + r.astype(np.int64), rel_keys)
    num_relevant = np.bincount(rel_keys // width, minlength=num_users)
    return hits, num_relevant


def _check_k(k: int, ranked_width: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    if k > ranked_width:
        raise ValueError(f"k: {k} exceeds the {ranked_width} ranked items per user")


def recall_at_k(ranked: Any, relevant: Any, k: int) -> float:
    """Mean over users with held-out items of ``|top-k ∩ held-out| / |held-out|``."""
    hits, num_rel = ranking_hits(ranked, relevant)
    _check_k(k, hits.shape[1])
    users = num_rel > 0
    if not users.any():
        raise ValueError("recall_at_k: no user has a held-out item")
    return float((hits[users, :k].sum(axis=1) / num_rel[users]).mean())


def ndcg_at_k(ranked: Any, relevant: Any, k: int) -> float:
    """Mean over users with held-out items of DCG@k / ideal DCG@k (binary relevance)."""
    hits, num_rel = ranking_hits(ranked, relevant)
    _check_k(k, hits.shape[1])
    users = num_rel > 0
    if not users.any():
        raise ValueError("ndcg_at_k: no user has a held-out item")
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[users, :k] * discount).sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(num_rel[users], k) - 1]
    return float((dcg / ideal).mean())
