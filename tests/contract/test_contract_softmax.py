"""GAT's exact edge softmax: the table, the integer softmax against float softmax, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.contract import check_table, edge_softmax_q, softmax_table
from qgnn.contract.softmax import MAX_DEGREE, ONE


@pytest.mark.parametrize("bits", [1, 4, 8])
@pytest.mark.parametrize("scale", [1e-4, 0.05, 0.7, 30.0])
def test_table_starts_at_2_30_and_never_increases(bits: int, scale: float) -> None:
    table = softmax_table(np.float32(scale), bits)
    assert table.dtype == np.int64 and table.shape == (2**bits,)
    assert table[0] == ONE == 2**30
    assert np.all(np.diff(table) <= 0) and table.min() >= 0
    check_table(table)
    d = np.arange(2**bits)
    np.testing.assert_allclose(table, 2.0**30 * np.exp(-d * float(np.float32(scale))),
                               atol=0.5)


def test_table_of_a_small_scale_strictly_decreases() -> None:
    assert np.all(np.diff(softmax_table(np.float32(0.02), 8)) < 0)


@pytest.mark.parametrize("scale", [0.0, -0.1, np.inf, np.nan, 1e-46, np.array([0.1, 0.2])])
def test_table_refuses_a_bad_scale(scale) -> None:
    with pytest.raises(ValueError, match="scale"):
        softmax_table(np.asarray(scale, np.float64), 8)


@pytest.mark.parametrize("bits", [0, 9, 2.0, True])
def test_table_refuses_bad_bits(bits) -> None:
    with pytest.raises(ValueError, match="bits"):
        softmax_table(0.1, bits)


@pytest.mark.parametrize(("table", "match"), [
    (np.full(3, ONE, np.int64), "2\\^bits entries"),
    (np.full(512, ONE, np.int64), "2\\^bits entries"),
    (np.array([ONE], np.int64), "2\\^bits entries"),
    (np.array([ONE - 1, 5], np.int64), "table\\[0\\]"),
    (np.array([ONE, ONE + 1], np.int64), "non-increasing"),
    (np.array([ONE, 3, 4, 0], np.int64), "non-increasing"),
    (np.array([ONE, -1], np.int64), ">= 0"),
    (np.array([ONE, 0], np.int32), "int64"),
    (np.full((2, 2), ONE, np.int64), "1-D"),
])
def test_check_table_refuses(table: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_table(table)


def test_softmax_is_the_float_softmax_to_1e7_and_sums_to_one() -> None:
    rng = np.random.default_rng(0)
    scale = np.float32(0.037)
    table = softmax_table(scale, 8)
    dst = np.sort(rng.integers(0, 50, 600))
    q = rng.integers(0, 256, (600, 3)).astype(np.uint8)
    alpha = edge_softmax_q(q, dst, 60, table)
    assert alpha.dtype == np.float32
    logits = q.astype(np.float64) * float(scale)
    want = np.zeros_like(logits)
    for v in np.unique(dst):
        rows = dst == v
        ex = np.exp(logits[rows] - logits[rows].max(0))
        want[rows] = ex / ex.sum(0)
    np.testing.assert_allclose(alpha, want, rtol=2e-7, atol=1e-9)
    sums = np.zeros((60, 3))
    np.add.at(sums, dst, alpha.astype(np.float64))
    np.testing.assert_allclose(sums[np.unique(dst)], 1.0, rtol=1e-6)


def test_hand_computed_alphas_are_exact_ratios() -> None:
    table = np.array([ONE, ONE // 2, ONE // 4, 0], np.int64)
    q = np.array([[3], [2], [3], [1], [0], [0], [0]], np.uint8)
    dst = np.array([0, 0, 0, 0, 2, 3, 3])
    # destination 0: t = [1, 1/2, 1, 1/4] of 2^30, sum 11/4; 2: one edge; 3: equal logits
    want = np.array([[4 / 11], [2 / 11], [4 / 11], [1 / 11], [1], [0.5], [0.5]], np.float64)
    got = edge_softmax_q(q, dst, 4, table)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    # the order of edges changes nothing: integer sums
    order = np.random.default_rng(1).permutation(7)
    np.testing.assert_array_equal(edge_softmax_q(q[order], dst[order], 4, table), got[order])


def test_softmax_refuses_bad_inputs() -> None:
    table = softmax_table(0.1, 4)
    with pytest.raises(ValueError, match="beyond the table of 16"):
        edge_softmax_q(np.array([[16]], np.uint8), np.array([0]), 1, table)
    with pytest.raises(ValueError, match="uint8"):
        edge_softmax_q(np.array([[1]], np.int32), np.array([0]), 1, table)
    with pytest.raises(ValueError, match="2\\^bits entries"):
        edge_softmax_q(np.array([[1]], np.uint8), np.array([0]), 1, table[:5])
    many = MAX_DEGREE + 1
    with pytest.raises(ValueError, match=f"{many} in-edges, more than {MAX_DEGREE}"):
        edge_softmax_q(np.zeros((many, 1), np.uint8), np.zeros(many, np.int64), 1, table)
