"""GAT's per-head scores: hand-computed cases, and independence from the summation order."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.contract import attention_matrix, head_scores, score_scale


def test_scores_are_exact_dots_times_one_scale() -> None:
    lin = np.array([[10, 12, 7, 9], [8, 8, 8, 8]], np.uint8)  # 2 heads of 2, zero point 8
    att = np.array([[1, -2], [3, 4]], np.int8)
    # node 0: head 0 (2*1 + 4*-2) = -6, head 1 (-1*3 + 1*4) = 1; node 1: all centred to 0
    got = head_scores(lin, 8, att, np.float32(0.5))
    np.testing.assert_array_equal(got, [[-3.0, 0.5], [0.0, 0.0]])
    assert got.dtype == np.float32
    per_head = head_scores(lin, 8, att, np.array([0.5, 2.0], np.float32))
    np.testing.assert_array_equal(per_head, [[-3.0, 2.0], [0.0, 0.0]])


def test_score_scale_is_one_float32_product() -> None:
    a, b = np.float32(0.1), np.array([0.3, 0.7], np.float32)
    np.testing.assert_array_equal(score_scale(a, b), (a * b).astype(np.float32))
    assert score_scale(a, np.float32(0.3)).dtype == np.float32


def test_attention_matrix_is_block_diagonal() -> None:
    att = np.array([[1, 2, 3], [-4, -5, -6]], np.int8)
    m = attention_matrix(att)
    assert m.shape == (6, 2) and m.dtype == np.int8
    np.testing.assert_array_equal(m[:3, 0], [1, 2, 3])
    np.testing.assert_array_equal(m[3:, 1], [-4, -5, -6])
    assert not m[3:, 0].any() and not m[:3, 1].any()
    rng = np.random.default_rng(0)
    lin = rng.integers(0, 256, (50, 6)).astype(np.uint8)
    dense = (lin.astype(np.int64) - 100) @ m.astype(np.int64)  # what MatMulInteger computes
    np.testing.assert_array_equal(head_scores(lin, 100, att, np.float32(1.0)), dense)


def test_scores_do_not_depend_on_the_order_of_the_heads_elements() -> None:
    rng = np.random.default_rng(1)
    lin = rng.integers(0, 256, (200, 4 * 64)).astype(np.uint8)
    att = rng.integers(-127, 128, (4, 64)).astype(np.int8)
    perm = rng.permutation(64)
    permuted = lin.reshape(200, 4, 64)[:, :, perm].reshape(200, -1)
    scale = np.float32(0.0123)
    np.testing.assert_array_equal(head_scores(lin, 3, att, scale),
                                  head_scores(permuted, 3, att[:, perm], scale))


def test_bad_attention_vectors_are_named() -> None:
    with pytest.raises(ValueError, match="int8"):
        attention_matrix(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="head_dim 600"):
        attention_matrix(np.zeros((1, 600), np.int8))
