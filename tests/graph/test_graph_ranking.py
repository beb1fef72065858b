"""Ranking metrics against hand-computed cases (the numpy module the serving side shares)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qgnn.graph.ranking import (
    hit_rate_at_k,
    hits_at_k,
    most_popular_scores,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
    seen_csr,
    top_k_items,
)

RANKED = np.array([[3, 5, 7], [4, 6, 8]])
RELEVANT = np.array([[0, 5], [0, 9], [1, 8]])


def test_recall_ndcg_hit_rate_by_hand():
    # user 0: item 5 at rank 2 of its 2 held-out items; user 1: item 8 at rank 3 of 1
    assert recall_at_k(RANKED, RELEVANT, 3) == pytest.approx((1 / 2 + 1) / 2)
    user0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    user1 = (1 / math.log2(4)) / 1
    assert ndcg_at_k(RANKED, RELEVANT, 3) == pytest.approx((user0 + user1) / 2)
    assert hit_rate_at_k(RANKED, RELEVANT, 3) == 1.0
    assert hit_rate_at_k(RANKED, RELEVANT, 2) == 0.5
    assert recall_at_k(RANKED, RELEVANT, 1) == 0.0
    assert ranking_metrics(RANKED, RELEVANT, 2) == {
        "recall@2": pytest.approx(0.25), "ndcg@2": pytest.approx(user0 / 2),
        "hit_rate@2": 0.5}


def test_ogb_hits_at_k_is_strictly_above_the_kth_negative():
    neg = [0.1, 0.6, 0.3, 0.8]
    assert hits_at_k([0.9, 0.5, 0.2], neg, 2) == pytest.approx(1 / 3)
    assert hits_at_k([0.6], neg, 2) == 0.0  # a tie with the k-th negative does not count
    assert hits_at_k([0.0], neg, 5) == 1.0  # fewer negatives than k
    with pytest.raises(ValueError, match="k: expected a positive int"):
        hits_at_k([1.0], neg, 0)


def test_top_k_excludes_seen_and_breaks_ties_by_id():
    scores = np.array([[1.0, 5.0, 3.0, 4.0], [2.0, 2.0, 1.0, 2.0]])
    indptr, indices = np.array([0, 1, 1]), np.array([1])
    np.testing.assert_array_equal(top_k_items(scores, 2, seen_indptr=indptr,
                                              seen_indices=indices), [[3, 2], [0, 1]])
    # rows of users 1 only
    np.testing.assert_array_equal(top_k_items(scores[:1], 1, seen_indptr=indptr,
                                              seen_indices=indices, rows=np.array([1])), [[1]])
    with pytest.raises(ValueError, match="exceeds the 4 items"):
        top_k_items(scores, 5)


def test_seen_csr_and_popularity():
    indptr, indices = seen_csr(np.array([[1, 7], [0, 5], [1, 5], [1, 7]]), 3, 5)
    assert indptr.tolist() == [0, 1, 3, 3] and indices.tolist() == [0, 0, 2]
    assert most_popular_scores(np.array([2, 0, 2]), 4).tolist() == [1, 0, 2, 0]


def test_hand_computed_recall_ndcg_hit_rate() -> None:
    # user 0: held out {7, 9}; ranked 7, 3, 9 -> hits at ranks 1 and 3
    # user 1: held out {4}; ranked 1, 2, (no third item) -> no hit
    # user 2: nothing held out -> left out of every mean
    ranked = np.array([[7, 3, 9], [1, 2, -1], [5, 6, 8]])
    relevant = np.array([[0, 7], [0, 9], [1, 4], [0, 9]])  # a duplicate pair counts once
    m = ranking_metrics(ranked, relevant, [1, 3])
    assert m["recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@3"] == pytest.approx((2 / 2 + 0) / 2)
    assert m["hit_rate@1"] == pytest.approx(0.5)
    assert m["hit_rate@3"] == pytest.approx(0.5)
    dcg0 = 1 / math.log2(2) + 1 / math.log2(4)
    idcg0 = 1 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@3"] == pytest.approx((dcg0 / idcg0 + 0) / 2)
    assert m["ndcg@1"] == pytest.approx((1.0 + 0) / 2)


def test_padding_never_hits_and_bad_input_is_named() -> None:
    # -1 pads must not collide with item ids of the previous row
    m = ranking_metrics(np.array([[5, -1], [-1, -1]]), np.array([[1, 5]]), [2])
    assert m["recall@2"] == 0.0
    with pytest.raises(ValueError, match="k: 3 exceeds"):
        ranking_metrics(np.array([[1, 2]]), np.array([[0, 1]]), [3])
    with pytest.raises(ValueError, match="no row has a held-out item"):
        ranking_metrics(np.array([[1, 2]]), np.zeros((0, 2), np.int64), [1])
    with pytest.raises(ValueError, match="rows must lie in"):
        ranking_metrics(np.array([[1, 2]]), np.array([[3, 1]]), [1])
    with pytest.raises(ValueError, match="integer ids"):
        ranking_metrics(np.array([[1.5, 2]]), np.array([[0, 1]]), [1])
