"""aggregate_f32 and edge_softmax_f32 against float64 numpy oracles (relative 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime.kernels import aggregate_f32, aggregate_padded_f32, edge_softmax_f32


def aggregate_oracle(x, indptr, src, reduce, w=None):
    num_dst = len(indptr) - 1
    deg = np.diff(indptr)
    dst = np.repeat(np.arange(num_dst), deg)
    msg = x[src].astype(np.float64)
    if w is not None:
        msg = msg * w.astype(np.float64)[:, None]
    if reduce == "max":
        out = np.full((num_dst, x.shape[1]), -np.inf)
        np.maximum.at(out, dst, msg)
    else:
        out = np.zeros((num_dst, x.shape[1]))
        np.add.at(out, dst, msg)
        if reduce == "mean":
            out /= np.maximum(deg, 1)[:, None]
    out[deg == 0] = 0.0
    return out


def softmax_oracle(logits, indptr):
    out = np.zeros(logits.shape, np.float64)
    for v in range(len(indptr) - 1):
        seg = logits[indptr[v]:indptr[v + 1]].astype(np.float64)
        if len(seg):
            e = np.exp(seg - seg.max(axis=0))
            out[indptr[v]:indptr[v + 1]] = e / e.sum(axis=0)
    return out


def assert_close(got, want):
    """1e-5 relative, with an absolute floor at the scale of the summed magnitudes."""
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("feats", [1, 7, 16, 33, 64, 100])
def test_aggregate_matches_oracle(make_csr, reduce, weighted, feats):
    rng = np.random.default_rng(feats)
    indptr, src, _ = make_csr(50, 600, 80, empty_frac=0.2)
    x = rng.standard_normal((80, feats)).astype(np.float32)
    w = rng.uniform(-2, 2, len(src)).astype(np.float32) if weighted else None
    got = aggregate_f32(x, indptr, src, reduce, w)
    assert got.dtype == np.float32 and got.shape == (50, feats)
    assert_close(got, aggregate_oracle(x, indptr, src, reduce, w))


def test_aggregate_hand_computed():
    x = np.array([[1.0, -2.0], [3.0, 4.0]], np.float32)
    indptr, src = np.array([0, 3, 3]), np.array([0, 1, 1])  # dst 0 <- 0, 1, 1 (repeated)
    w = np.array([2.0, 0.5, -1.0], np.float32)
    np.testing.assert_array_equal(aggregate_f32(x, indptr, src, "sum"), [[7, 6], [0, 0]])
    np.testing.assert_array_equal(aggregate_f32(x, indptr, src, "sum", w), [[0.5, -6], [0, 0]])
    np.testing.assert_allclose(aggregate_f32(x, indptr, src, "mean"), [[7 / 3, 2], [0, 0]])
    np.testing.assert_array_equal(aggregate_f32(x, indptr, src, "max", w), [[2, 2], [0, 0]])


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_aggregate_degenerate_shapes(reduce):
    x = np.ones((3, 4), np.float32)
    no_edges = aggregate_f32(x, np.zeros(4, np.int64), np.zeros(0, np.int64), reduce)
    np.testing.assert_array_equal(no_edges, np.zeros((3, 4), np.float32))
    assert aggregate_f32(x, [0], [], reduce).shape == (0, 4)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_aggregate_hub_and_threads(parts_used, reduce):
    rng = np.random.default_rng(3)
    src = rng.integers(0, 500, 100_500)
    indptr = np.array([0, 100_000, 100_200, 100_500])
    x = rng.random((500, 16), dtype=np.float32)
    runs = []
    for t in (1, 2, 3):
        runs.append(aggregate_f32(x, indptr, src, reduce, num_threads=t))
        assert parts_used() == t  # the hub is one part, the other destinations the rest
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0], other)
    assert_close(runs[0], aggregate_oracle(x, indptr, src, reduce))


def test_aggregate_many_destinations_threads_identical(make_csr, parts_used):
    rng = np.random.default_rng(4)
    indptr, src, _ = make_csr(4000, 30_000, 3000, empty_frac=0.1)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    w = rng.random(len(src), dtype=np.float32)
    one = aggregate_f32(x, indptr, src, "sum", w, num_threads=1)
    np.testing.assert_array_equal(one, aggregate_f32(x, indptr, src, "sum", w, num_threads=2))
    assert parts_used() == 2


@pytest.mark.parametrize("heads", [1, 3, 8, 70])
def test_edge_softmax_matches_oracle(make_csr, heads):
    rng = np.random.default_rng(heads)
    indptr, _, _ = make_csr(40, 500, 1, empty_frac=0.25)
    logits = (rng.standard_normal((500, heads)) * 10).astype(np.float32)
    got = edge_softmax_f32(logits, indptr)
    assert got.shape == logits.shape and got.dtype == np.float32
    assert_close(got, softmax_oracle(logits, indptr))
    sums = np.add.reduceat(got.astype(np.float64), indptr[:-1][np.diff(indptr) > 0], axis=0)
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)


def test_edge_softmax_hand_computed_and_large_logits():
    logits = np.array([[0.0], [np.log(3.0)], [1000.0], [1000.0], [-5.0]], np.float32)
    got = edge_softmax_f32(logits, np.array([0, 2, 2, 4, 5]))
    np.testing.assert_allclose(got[:, 0], [0.25, 0.75, 0.5, 0.5, 1.0], rtol=1e-6)


def test_padded_aggregate_equals_csr_on_the_used_slots():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((30, 20)).astype(np.float32)
    nbr = rng.integers(0, 30, (12, 5))
    nbr[rng.random(nbr.shape) < 0.4] = -1
    nbr[3] = -1  # a destination with no neighbour
    w = rng.random(nbr.shape, dtype=np.float32)
    w[nbr < 0] = np.nan  # padding values are ignored
    used = nbr >= 0
    indptr = np.concatenate([[0], np.cumsum(used.sum(1))])
    for reduce in ("sum", "mean", "max"):
        want = aggregate_f32(x, indptr, nbr[used], reduce, w[used])
        np.testing.assert_array_equal(aggregate_padded_f32(x, nbr, reduce, w), want)
    with pytest.raises(ValueError, match="nbr holds -2; only -1 marks an unused slot"):
        aggregate_padded_f32(x, np.full((2, 2), -2))
    with pytest.raises(ValueError, match="edge weights must have nbr's shape"):
        aggregate_padded_f32(x, nbr, "sum", w[:, :2])
    with pytest.raises(ValueError, match=r"src\[0\] = 30 is out of range"):
        aggregate_padded_f32(x, np.full((1, 1), 30))


def test_edge_softmax_threads_and_empty(make_csr, parts_used):
    rng = np.random.default_rng(8)
    indptr, _, _ = make_csr(5000, 60_000, 1, empty_frac=0.1)
    logits = rng.standard_normal((60_000, 4)).astype(np.float32)
    one = edge_softmax_f32(logits, indptr, num_threads=1)
    np.testing.assert_array_equal(one, edge_softmax_f32(logits, indptr, num_threads=2))
    assert parts_used() == 2
    assert edge_softmax_f32(np.zeros((0, 2), np.float32), [0, 0, 0]).shape == (0, 2)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: aggregate_f32(np.zeros((3, 2), np.float64), [0, 1], [0]),
     "x must have dtype float32, got float64"),
    (lambda: aggregate_f32(np.zeros((3, 2), np.float32), [0, 1], [3]),
     r"src\[0\] = 3 is out of range \[0, 3\)"),
    (lambda: aggregate_f32(np.zeros((3, 2), np.float32), [0, 2], [0]),
     r"indptr\[-1\] = 2 must equal the number of edges len\(src\) = 1"),
    (lambda: aggregate_f32(np.zeros((3, 2), np.float32), [0, 1], [0], "sum",
                           np.ones(2, np.float32)), "w must have 1 rows"),
    (lambda: aggregate_f32(np.zeros((3, 2), np.float32), [0, 1], [0], "prod"),
     "reduce must be one of"),
    (lambda: edge_softmax_f32(np.zeros((3, 2), np.float32), [0, 2]),
     r"indptr\[-1\] = 2 must equal the number of edges len\(logits\) = 3"),
    (lambda: edge_softmax_f32(np.zeros(3, np.float32), [0, 3]),
     r"logits must have 2 dimension\(s\)"),
    (lambda: edge_softmax_f32(np.zeros((3, 1), np.float32), [0, 3, 1, 3]),
     "indptr must be non-decreasing"),
    (lambda: edge_softmax_f32(np.array([[0, 1], [2, np.inf]], np.float32), [0, 2]),
     r"logits must be finite, got inf at \[1, 1\]"),
    (lambda: edge_softmax_f32(np.array([[0, 1], [np.nan, 0]], np.float32), [0, 1, 2]),
     r"logits must be finite, got nan at \[1, 0\]"),
])
def test_float_ops_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
