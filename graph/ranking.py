"""Top-K ranking metrics over numpy arrays: Recall@K, NDCG@K, HitRate@K (numpy only).

The convention is LightGCN's / NGCF's (He et al., SIGIR 2020), as in training/metrics.py:
Recall@K = hits in the top K / number of held-out items; NDCG@K = DCG@K / the ideal DCG of
``min(K, |held-out|)`` hits, binary relevance, discount ``1 / log2(rank + 1)``; HitRate@K = 1
when the top K holds at least one held-out item. Users without a held-out item are left out of
every mean. Here a row of ``ranked`` may be shorter than K (padded with -1: fewer candidates
were left), which counts as misses. Torch-free so that serving (``qgnn evaluate-recs``) and
training can share one definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD = -1


def ranking_hits(ranked: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hits (U, K) bool, num_relevant (U,))``: which ranked items are held out for their
    row. ``ranked`` (U, K) integer ids best first (``PAD`` = no item); ``relevant`` (M, 2)
    integer ``(row, item)`` pairs, row in [0, U) (duplicates count once)."""
    r = np.asarray(ranked)
    rel = np.asarray(relevant)
    if r.ndim != 2 or r.dtype.kind not in "iu":
        raise ValueError(f"ranked: expected (U, K) integer ids, got {r.dtype} {list(r.shape)}")
    if rel.size == 0:
        rel = np.zeros((0, 2), np.int64)
    if rel.ndim != 2 or rel.shape[1] != 2 or rel.dtype.kind not in "iu":
        raise ValueError(f"relevant: expected (M, 2) integer (row, item) pairs, got "
                         f"{rel.dtype} {list(rel.shape)}")
    u = r.shape[0]
    if rel.size and (int(rel[:, 0].min()) < 0 or int(rel[:, 0].max()) >= u):
        raise ValueError(f"relevant: rows must lie in [0, {u})")
    if (r < PAD).any() or (rel[:, 1] < 0).any():
        raise ValueError("ranked / relevant: item ids must be >= 0 (-1 pads ranked rows)")
    width = int(max(r.max(initial=0), rel[:, 1].max(initial=0))) + 1
    keys = np.unique(rel[:, 0].astype(np.int64) * width + rel[:, 1].astype(np.int64))
    rows = np.arange(u, dtype=np.int64)[:, None]
    hits = np.isin(rows * width + r.astype(np.int64), keys) & (r != PAD)
    return hits, np.bincount(keys // width, minlength=u)


def _check_k(k: int, width: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
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


def ranking_metrics(ranked: np.ndarray, relevant: np.ndarray, ks: Sequence[int]
                    ) -> dict[str, float]:
    """Recall, NDCG and HitRate at every K of ``ks`` (see the module docstring)."""
    hits, num_relevant = ranking_hits(ranked, relevant)
    out: dict[str, float] = {}
    for k in ks:
        out.update(metrics_at_k(hits, num_relevant, int(k)))
    return out
