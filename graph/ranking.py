"""Ranking metrics for recommendation and link prediction, numpy only.

Top-k metrics follow the LightGCN / NGCF convention (He et al., SIGIR 2020): every item is
ranked for each user with that user's known interactions left out; Recall@K divides the hits
in the top K by the number of held-out items, NDCG@K divides DCG@K by the ideal DCG of
``min(K, |held-out|)`` hits (binary relevance, discount ``1 / log2(rank + 1)``), HitRate@K is
the share of users with at least one hit; users with no held-out item are left out of every
mean. A row of ``ranked`` may be shorter than K (padded with ``PAD``: fewer candidates were
left), which counts as misses. ``hits_at_k`` is OGB's link protocol (Hu et al., NeurIPS 2020):
the share of positive pairs scored strictly above the K-th highest score of the split's shared
negative pairs. Training (qgnn.training.metrics), the benches and the serving side's
``qgnn evaluate-recs`` import these, so every part scores a model the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PAD = -1


def _np(value: Any) -> np.ndarray:
    """A numpy view of a numpy array, a torch tensor (any device) or a list."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def ranking_hits(ranked: Any, relevant: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(hits (U, K) bool, num_relevant (U,))``: which ranked items are held out for their
    row. ``ranked`` (U, K) integer ids best first (``PAD`` = no item); ``relevant`` (M, 2)
    integer ``(row, item)`` pairs, row in [0, U) (duplicates count once)."""
    r, rel = _np(ranked), _np(relevant)
    if r.ndim != 2 or r.dtype.kind not in "iu":
        raise ValueError(f"ranked: expected (U, K) integer ids, got {r.dtype} {list(r.shape)}")
    if rel.size == 0:
        rel = np.zeros((0, 2), np.int64)
    if rel.ndim != 2 or rel.shape[1] != 2 or rel.dtype.kind not in "iu":
        raise ValueError(f"relevant: expected (M, 2) integer (row, item) pairs, got "
                         f"{rel.dtype} {list(rel.shape)}")
    u = r.shape[0]
    if rel.size and (int(rel[:, 0].min()) < 0 or int(rel[:, 0].max()) >= u):
        raise ValueError(f"relevant: user rows must lie in [0, {u})")
    if (r < PAD).any() or (rel[:, 1] < 0).any():
        raise ValueError("ranked / relevant: item ids must be >= 0 (-1 pads ranked rows)")
    width = int(max(r.max(initial=0), rel[:, 1].max(initial=0))) + 1
    keys = np.unique(rel[:, 0].astype(np.int64) * width + rel[:, 1].astype(np.int64))
    rows = np.arange(u, dtype=np.int64)[:, None]
    hits = np.isin(rows * width + r.astype(np.int64), keys) & (r != PAD)
    return hits, np.bincount(keys // width, minlength=u)


def _check_k(k: int, width: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    if k > width:
        raise ValueError(f"k: {k} exceeds the {width} ranked items per row")


def metrics_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> dict[str, float]:
    """``{"recall@k", "ndcg@k", "hit_rate@k"}``: means over rows with a held-out item."""
    _check_k(k, hits.shape[1])
    users = num_relevant > 0
    if not users.any():
        raise ValueError("no row has a held-out item")
    top = hits[users, :k]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(num_relevant[users], k) - 1]
    return {f"recall@{k}": float((top.sum(axis=1) / num_relevant[users]).mean()),
            f"ndcg@{k}": float(((top * discount).sum(axis=1) / ideal).mean()),
            f"hit_rate@{k}": float(top.any(axis=1).mean())}


def recall_at_k(ranked: Any, relevant: Any, k: int) -> float:
    """Mean over users with held-out items of ``|top-k ∩ held-out| / |held-out|``."""
    return metrics_at_k(*ranking_hits(ranked, relevant), k)[f"recall@{k}"]


def ndcg_at_k(ranked: Any, relevant: Any, k: int) -> float:
    """Mean over users with held-out items of DCG@k / ideal DCG@k (binary relevance)."""
    return metrics_at_k(*ranking_hits(ranked, relevant), k)[f"ndcg@{k}"]


def hit_rate_at_k(ranked: Any, relevant: Any, k: int) -> float:
    """Share of users with held-out items that have at least one of them in the top k."""
    return metrics_at_k(*ranking_hits(ranked, relevant), k)[f"hit_rate@{k}"]


def ranking_metrics(ranked: Any, relevant: Any, ks: int | Sequence[int]) -> dict[str, float]:
    """Recall, NDCG and HitRate at K (an int) or at every K of ``ks``."""
    hits, num_relevant = ranking_hits(ranked, relevant)
    out: dict[str, float] = {}
    for k in ([ks] if isinstance(ks, int | np.integer) else ks):
        out.update(metrics_at_k(hits, num_relevant, int(k)))
    return out


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
