"""Ranking metrics for recommendation and link prediction, numpy only.

Top-k metrics follow the LightGCN / NGCF convention (He et al., SIGIR 2020): every item is
ranked for each user with that user's known interactions left out; Recall@K divides the hits
in the top K by the number of held-out items, NDCG@K divides DCG@K by the ideal DCG of
``min(K, |held-out|)`` hits, HitRate@K is the share of users with at least one hit; users with
no held-out item are left out of the mean. ``hits_at_k`` is OGB's link protocol (Hu et al.,
NeurIPS 2020): the share of positive pairs scored strictly above the K-th highest score of the
split's shared negative pairs. Training (qgnn.training.metrics) and the serving side's ranking
evaluation import these, so both score a model the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _np(value: Any) -> np.ndarray:
    """A numpy view of a numpy array, a torch tensor (any device) or a list."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


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


def hit_rate_at_k(ranked: Any, relevant: Any, k: int) -> float:
    """Share of users with held-out items that have at least one of them in the top k."""
    hits, num_rel = ranking_hits(ranked, relevant)
    _check_k(k, hits.shape[1])
    users = num_rel > 0
    if not users.any():
        raise ValueError("hit_rate_at_k: no user has a held-out item")
    return float(hits[users, :k].any(axis=1).mean())


def ranking_metrics(ranked: Any, relevant: Any, k: int) -> dict[str, float]:
    """``{"recall@k", "ndcg@k", "hit_rate@k"}`` of one ranking."""
    return {f"recall@{k}": recall_at_k(ranked, relevant, k),
            f"ndcg@{k}": ndcg_at_k(ranked, relevant, k),
            f"hit_rate@{k}": hit_rate_at_k(ranked, relevant, k)}


def hits_at_k(pos_scores: Any, neg_scores: Any, k: int) -> float:
    """OGB Hits@k: share of positive scores strictly above the k-th highest negative score
    (every positive counts when there are fewer than k negatives)."""
    pos, neg = _np(pos_scores).astype(np.float64).ravel(), _np(neg_scores).astype(
        np.float64).ravel()
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    if pos.size == 0:
        raise ValueError("hits_at_k: no positive scores")
    if neg.size < k:
        return 1.0
    kth = np.partition(neg, neg.size - k)[neg.size - k]
    return float((pos > kth).mean())


def top_k_items(scores: np.ndarray, k: int, *, seen_indptr: np.ndarray | None = None,
                seen_indices: np.ndarray | None = None, rows: np.ndarray | None = None,
                ) -> np.ndarray:
    """Column ids of the ``k`` best scores per row of ``scores`` ``(R, I)``, best first, with
    each row's seen columns (CSR over all users, ``rows`` = which user each row is) left out.
    Ties go to the lower column id (a stable, reproducible order)."""
    s = np.array(scores, dtype=np.float64, copy=True)
    if s.ndim != 2:
        raise ValueError(f"scores: expected (R, I), got shape {s.shape}")
    if k > s.shape[1]:
        raise ValueError(f"k: {k} exceeds the {s.shape[1]} items")
    if seen_indptr is not None and seen_indices is not None:
        users = np.arange(len(s)) if rows is None else np.asarray(rows)
        starts, ends = seen_indptr[users], seen_indptr[users + 1]
        counts = ends - starts
        row_of = np.repeat(np.arange(len(s)), counts)
        cols = seen_indices[np.concatenate([np.arange(a, b) for a, b in zip(starts, ends,
                                                                            strict=True)])
                            ] if counts.sum() else np.zeros(0, np.int64)
        s[row_of, cols] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")
    return order[:, :k]


def most_popular_scores(train_items: np.ndarray, num_items: int) -> np.ndarray:
    """The most-popular baseline's item scores: training interaction counts ``(I,)``
    (``train_items`` are item column ids ``0..I-1``)."""
    return np.bincount(np.asarray(train_items, np.int64), minlength=num_items).astype(
        np.float64)


def seen_csr(pairs: np.ndarray, num_users: int, first_item: int) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """``(indptr (U + 1,), indices)`` int64 of sorted, distinct item columns per user from
    ``(M, 2)`` (user node, item node) pairs."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    keys = np.unique(pairs[:, 0] * (1 << 32) + (pairs[:, 1] - first_item))
    users, cols = keys >> 32, keys & ((1 << 32) - 1)
    indptr = np.zeros(num_users + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=num_users), out=indptr[1:])
    return indptr, cols.astype(np.int64)
