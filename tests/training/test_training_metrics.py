import numpy as np
import pytest
import torch
from qgnn.training.metrics import accuracy, average_ranks, ndcg_at_k, recall_at_k, roc_auc


def pairwise_auc(scores, labels):
    """Oracle: the fraction of (positive, negative) pairs ordered correctly, ties count 1/2."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


def test_accuracy_from_logits_and_labels():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.1, 0.2]])
    y = torch.tensor([0, 1, 1, 1])
    assert accuracy(logits, y) == 0.75
    assert accuracy(np.array([0, 1, 1, 0]), np.array([0, 1, 1, 1])) == 0.75


def test_accuracy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        accuracy(np.zeros((3, 2)), np.zeros(4, np.int64))


def test_roc_auc_hand_computed():
    # positives at 0.9 and 0.4; negatives at 0.5 and 0.1: 3 of 4 pairs ordered -> 0.75
    assert roc_auc([0.9, 0.5, 0.4, 0.1], [1, 0, 1, 0]) == 0.75


def test_roc_auc_ties_count_half():
    # every score equal: a coin flip
    assert roc_auc([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0]) == 0.5
    # pos {0.8, 0.5}, neg {0.5, 0.2}: pairs 1, 1, 0.5, 1 -> 3.5 / 4
    assert roc_auc([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0]) == 0.875


def test_roc_auc_matches_pairwise_oracle_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 300).astype(np.float64)  # heavy ties
    labels = rng.integers(0, 2, 300)
    assert roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels), abs=1e-12)


def test_roc_auc_takes_two_column_scores():
    probs = torch.tensor([[0.1, 0.9], [0.6, 0.4], [0.7, 0.3]])
    assert roc_auc(probs, torch.tensor([1, 1, 0])) == 1.0


def test_roc_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0.1, 0.2], [0, 2])


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(average_ranks(np.array([10.0, 20.0, 10.0, 30.0])),
                                  [1.5, 3.0, 1.5, 4.0])


# Two users. User 0 held out {3, 7}; ranked [3, 5, 7]. User 1 held out {1}; ranked [2, 4, 1].
RANKED = np.array([[3, 5, 7], [2, 4, 1]])
HELD_OUT = np.array([[0, 3], [0, 7], [1, 1]])


def test_recall_at_k_hand_computed():
    assert recall_at_k(RANKED, HELD_OUT, 1) == pytest.approx((1 / 2 + 0) / 2)
    assert recall_at_k(RANKED, HELD_OUT, 3) == pytest.approx((2 / 2 + 1) / 2)


def test_ndcg_at_k_hand_computed():
    d = 1 / np.log2(np.arange(2, 5))  # discounts of positions 1, 2, 3
    user0 = (d[0] + d[2]) / (d[0] + d[1])
    user1 = d[2] / d[0]
    assert ndcg_at_k(RANKED, HELD_OUT, 3) == pytest.approx((user0 + user1) / 2)
    assert ndcg_at_k(RANKED, HELD_OUT, 1) == pytest.approx((1.0 + 0.0) / 2)


def test_ranking_skips_users_without_held_out_items_and_duplicate_pairs():
    ranked = np.array([[3, 5], [2, 4]])
    held = np.array([[0, 5], [0, 5]])  # user 1 has nothing held out; duplicate pair counts once
    assert recall_at_k(ranked, held, 2) == 1.0
    assert ndcg_at_k(ranked, held, 2) == pytest.approx((1 / np.log2(3)) / 1.0)


def test_ranking_rejects_bad_k_and_rows():
    with pytest.raises(ValueError, match="k: 4 exceeds"):
        recall_at_k(RANKED, HELD_OUT, 4)
    with pytest.raises(ValueError, match="positive int"):
        ndcg_at_k(RANKED, HELD_OUT, 0)
    with pytest.raises(ValueError, match=r"user rows must lie in \[0, 2\)"):
        recall_at_k(RANKED, np.array([[2, 1]]), 1)
