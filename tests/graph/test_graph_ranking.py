"""Ranking metrics against hand-computed cases (qgnn.graph.ranking)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qgnn.graph.ranking import ranking_metrics


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
