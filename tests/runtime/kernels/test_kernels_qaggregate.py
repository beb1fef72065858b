"""qaggregate against a numpy oracle of the quantisation contract: integers must match exactly."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime.kernels import qaggregate, qaggregate_padded

INT32_MAX = 2**31 - 1


def oracle(x_q, x_zp, indptr, src, multiplier, y_zp, reduce, w_q=None, w_zp=0, bits=8):
    """The contract written out with numpy segment reductions on exact int64 messages."""
    num_dst, feats = len(indptr) - 1, x_q.shape[1]
    deg = np.diff(indptr)
    msg = x_q[src].astype(np.int64) - x_zp
    if w_q is not None:
        msg = msg * (w_q.astype(np.int64) - w_zp)[:, None]
    # Segment reductions over [indptr[v], indptr[v+1]): with a sentinel row appended, every
    # boundary (including E) is a valid reduceat index; rows of empty segments are zeroed.
    padded = np.concatenate([msg, np.zeros((1, feats), np.int64)])
    ufunc = np.maximum if reduce == "max" else np.add
    acc = ufunc.reduceat(padded, indptr, axis=0)[:num_dst]
    acc[deg == 0] = 0
    assert np.abs(acc).max(initial=0) <= INT32_MAX, "oracle: input invalid for int32"
    acc = acc.astype(np.int32)
    m = np.float32(multiplier)
    if reduce == "mean":
        m = (m / np.maximum(deg, 1).astype(np.float32))[:, None]
    with np.errstate(over="ignore"):
        y = np.rint(acc.astype(np.float32) * m) + np.float32(y_zp)
    out = np.clip(y, 0, 2**bits - 1).astype(np.uint8)
    out[deg == 0] = min(y_zp, 2**bits - 1)
    return out


REDUCES = ("sum", "mean", "max")


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("feats", [1, 5, 16, 32, 48, 64, 70, 128, 200])
def test_matches_contract_oracle(make_csr, reduce, weighted, feats):
    rng = np.random.default_rng(feats)
    indptr, src, _ = make_csr(60, 700, 90, empty_frac=0.2)
    x = rng.integers(0, 256, (90, feats), dtype=np.uint8)
    w = rng.integers(0, 256, len(src), dtype=np.uint8) if weighted else None
    got = qaggregate(x, 37, indptr, src, 0.0173, 121, reduce, w, 140)
    np.testing.assert_array_equal(got, oracle(x, 37, indptr, src, 0.0173, 121, reduce, w, 140))


def test_hand_computed_sum_mean_max_and_half_to_even():
    # dst 0 <- rows 0, 1, 2; dst 1 <- no edge; dst 2 <- row 2 twice (a repeated edge)
    x = np.array([[1], [3], [5]], dtype=np.uint8)
    indptr = np.array([0, 3, 3, 5])
    src = np.array([0, 1, 2, 2, 2])
    # sum: acc = (1-0)+(3-0)+(5-0) = 9 -> 9*0.5 = 4.5 -> 4 (even); dst 2: 10*0.5 = 5
    np.testing.assert_array_equal(qaggregate(x, 0, indptr, src, 0.5, 7, "sum")[:, 0], [11, 7, 12])
    # mean: m/deg = 0.5/3 (float32), 9 * that = 1.5 -> 2 (even); dst 2: 10 * 0.25 = 2.5 -> 2
    np.testing.assert_array_equal(qaggregate(x, 0, indptr, src, 0.5, 7, "mean")[:, 0], [9, 7, 9])
    # max with x_zp = 2: max(x) - 2 = 3 -> 1.5 -> 2; dst 2: 3 -> 2
    np.testing.assert_array_equal(qaggregate(x, 2, indptr, src, 0.5, 7, "max")[:, 0], [9, 7, 9])
    # 0.5 ties: 1 * 0.5 -> 0, 3 * 0.5 -> 2, 5 * 0.5 -> 2 (round half to even, not half up)
    one_each = np.array([0, 1, 2, 3])
    got = qaggregate(x, 0, one_each, np.array([0, 1, 2]), 0.5, 0, "sum")[:, 0]
    np.testing.assert_array_equal(got, [0, 2, 2])


def test_weighted_max_takes_the_largest_product():
    x = np.array([[10], [200]], dtype=np.uint8)
    w = np.array([0, 255], dtype=np.uint8)  # weights - 128: -128, 127
    indptr, src = np.array([0, 2]), np.array([0, 1])
    # (10-100)*(-128) = 11520, (200-100)*127 = 12700 -> max 12700 * 0.01 = 127
    got = qaggregate(x, 100, indptr, src, 0.01, 0, "max", w, 128)
    np.testing.assert_array_equal(got, [[127]])


@pytest.mark.parametrize("reduce", REDUCES)
def test_no_edges_and_no_destinations(reduce):
    x = np.full((4, 3), 200, np.uint8)
    empty = qaggregate(x, 10, np.zeros(6, np.int64), np.zeros(0, np.int64), 2.0, 99, reduce)
    np.testing.assert_array_equal(empty, np.full((5, 3), 99, np.uint8))
    none = qaggregate(x, 10, np.zeros(1, np.int64), np.zeros(0, np.int64), 2.0, 99, reduce)
    assert none.shape == (0, 3) and none.dtype == np.uint8
    no_rows = qaggregate(np.zeros((0, 3), np.uint8), 0, np.zeros(3, np.int64),
                         np.zeros(0, np.int64), 1.0, 5, reduce)
    np.testing.assert_array_equal(no_rows, np.full((2, 3), 5, np.uint8))


@pytest.mark.parametrize("reduce", REDUCES)
def test_saturation_and_extreme_multipliers(make_csr, reduce):
    indptr, src, _ = make_csr(40, 400, 20, empty_frac=0.1)
    x = np.where(np.random.default_rng(0).random((20, 64)) < 0.5, 0, 255).astype(np.uint8)
    w = np.where(np.arange(len(src)) % 2 == 0, 0, 255).astype(np.uint8)
    for mult in (1e-30, 1e-3, 1.0, 300.0, 1e30, 3.4e38):
        for x_zp, y_zp, w_zp in ((0, 0, 0), (255, 255, 255), (128, 3, 0)):
            got = qaggregate(x, x_zp, indptr, src, mult, y_zp, reduce, w, w_zp)
            want = oracle(x, x_zp, indptr, src, mult, y_zp, reduce, w, w_zp)
            np.testing.assert_array_equal(got, want, err_msg=f"{mult=} {x_zp=} {y_zp=}")
    top = qaggregate(np.full((20, 64), 255, np.uint8), 0, indptr, src, 1e30, 0, reduce)
    assert set(np.unique(top[np.diff(indptr) > 0])) == {255}


@pytest.mark.parametrize("degree", [256, 257, 258, 514, 515, 1000])
@pytest.mark.parametrize("pattern", ["all_255", "even_255", "odd_255", "random"])
def test_sums_past_the_16_bit_flush_are_exact(degree, pattern):
    """The vector paths sum rows in uint16 lanes and flush them into uint32 every 257 rows
    (255 * 257 = 65535): sums at and past each flush, with the even, the odd or every byte at
    its maximum, must equal the oracle's (a flush one row late fails here)."""
    rng = np.random.default_rng(degree)
    x = {"all_255": np.full((8, 136), 255, np.uint8),
         "even_255": np.tile(np.array([255, 0], np.uint8), (8, 68)),
         "odd_255": np.tile(np.array([0, 255], np.uint8), (8, 68)),
         "random": rng.integers(0, 256, (8, 136), dtype=np.uint8)}[pattern]
    src = rng.integers(0, 8, degree + 3)
    indptr = np.array([0, degree, degree + 3])
    for reduce, mult in (("sum", 1.0 / (255 * degree)), ("mean", 1.0 / 255)):
        for x_zp in (0, 255):
            got = qaggregate(x, x_zp, indptr, src, mult * 200, 17, reduce)
            np.testing.assert_array_equal(
                got, oracle(x, x_zp, indptr, src, mult * 200, 17, reduce))


@pytest.mark.parametrize("reduce", REDUCES)
def test_hub_with_100k_edges_is_exact(reduce):
    """A 100k-edge hub is past the weighted safe degree: summed in exact blocks, not wrapped."""
    rng = np.random.default_rng(5)
    num_src, hub_edges = 1000, 100_000
    src = np.concatenate([rng.integers(0, num_src, hub_edges), rng.integers(0, num_src, 300)])
    indptr = np.array([0, hub_edges, hub_edges + 100, hub_edges + 300])
    x = rng.integers(0, 256, (num_src, 84), dtype=np.uint8)  # 64 + 16 lanes + a 4-column tail
    w = rng.integers(0, 256, len(src), dtype=np.uint8)
    for weights in (None, w):
        got = qaggregate(x, 128, indptr, src, 1e-4, 128, reduce, weights, 128)
        np.testing.assert_array_equal(
            got, oracle(x, 128, indptr, src, 1e-4, 128, reduce, weights, 128))
    # unweighted, every message 255: 25.5M fits int32 (valid up to 8,421,504 edges)
    full, zeros = np.full((1, 3), 255, np.uint8), np.zeros(hub_edges, np.int64)
    want = {"sum": 255, "mean": 3, "max": 3}[reduce]  # 25.5M * 1e-5; 255 * 0.01 = 2.55
    mult = 1e-5 if reduce == "sum" else 0.01
    got = qaggregate(full, 0, [0, hub_edges], zeros, mult, 0, reduce)
    np.testing.assert_array_equal(got, [[want] * 3])


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_int32_overflow_is_refused_exactly_at_the_limit(reduce):
    """33,025 messages of 255 * 255 plus one of 158 * 209 sum to exactly 2^31 - 1 (valid);
    158 * 210 overflows and raises, naming the destination and its in-degree."""
    x = np.array([[0, 255], [100, 158]], np.uint8)
    src = np.array([0] * 33_025 + [1])
    w = np.array([255] * 33_025 + [209], np.uint8)
    indptr = np.array([0, 0, 33_026])
    got = qaggregate(x, 0, indptr, src, 1e-9, 0, reduce, w, 0)
    np.testing.assert_array_equal(got, oracle(x, 0, indptr, src, 1e-9, 0, reduce, w, 0))
    w[-1] = 210
    with pytest.raises(ValueError, match=r"destination 1, feature 1 overflows \(exact sum "
                       r"2147483805.*in-degree 33026 is too large"):
        qaggregate(x, 0, indptr, src, 1e-9, 0, reduce, w, 0)
    negative = np.array([[255, 0], [0, 0]], np.uint8)  # (0 - 255) * 255 per edge, col 1
    with pytest.raises(ValueError, match="feature 1 overflows"):
        qaggregate(negative, 255, indptr, src, 1e-9, 0, reduce, w, 0, num_threads=1)


def test_max_never_overflows_on_a_huge_weighted_hub():
    src = np.zeros(40_000, np.int64)
    w = np.full(40_000, 255, np.uint8)
    got = qaggregate(np.full((1, 2), 255, np.uint8), 0, [0, 40_000], src, 1e-3, 0, "max", w, 0)
    np.testing.assert_array_equal(got, [[65, 65]])  # 65025 * 1e-3 = 65.025


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("bits", [1, 4, 7])
def test_narrow_bit_widths_clamp_to_their_range(make_csr, reduce, bits):
    rng = np.random.default_rng(bits)
    indptr, src, _ = make_csr(50, 400, 30, empty_frac=0.2)
    x = rng.integers(0, 2**bits, (30, 20), dtype=np.uint8)
    for y_zp in (0, 2**bits - 1, 200):
        got = qaggregate(x, 1, indptr, src, 0.3, y_zp, reduce, bits=bits)
        np.testing.assert_array_equal(got, oracle(x, 1, indptr, src, 0.3, y_zp, reduce,
                                                  bits=bits))
        assert got.max() <= 2**bits - 1


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("weighted", [False, True])
def test_thread_counts_give_identical_output(make_csr, parts_used, reduce, weighted):
    rng = np.random.default_rng(9)
    indptr, src, _ = make_csr(3000, 40_000, 2000, empty_frac=0.1)
    x = rng.integers(0, 256, (2000, 24), dtype=np.uint8)
    w = rng.integers(0, 256, len(src), dtype=np.uint8) if weighted else None
    runs = []
    for t in (1, 2, 3):
        runs.append(qaggregate(x, 9, indptr, src, 0.003, 77, reduce, w, 31, num_threads=t))
        assert parts_used() == t
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0], other)
    np.testing.assert_array_equal(runs[0], oracle(x, 9, indptr, src, 0.003, 77, reduce, w, 31))


def test_non_contiguous_and_narrow_id_inputs_are_converted(make_csr):
    rng = np.random.default_rng(2)
    indptr, src, _ = make_csr(30, 200, 50)
    wide = rng.integers(0, 256, (50, 40), dtype=np.uint8)
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    want = qaggregate(np.ascontiguousarray(view), 3, indptr, src, 0.1, 4)
    got = qaggregate(view, 3, indptr.astype(np.int32), src.astype(np.uint16), 0.1, 4)
    np.testing.assert_array_equal(got, want)


def test_padded_form_equals_csr_on_the_used_slots():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (40, 16), dtype=np.uint8)
    nbr = rng.integers(0, 40, (15, 6))
    nbr[rng.random(nbr.shape) < 0.3] = -1
    nbr[0] = -1
    w = rng.integers(0, 256, nbr.shape, dtype=np.uint8)
    used = nbr >= 0
    indptr = np.concatenate([[0], np.cumsum(used.sum(1))])
    for reduce in REDUCES:
        got = qaggregate_padded(x, 5, nbr, 0.01, 100, reduce, w, 120, bits=7)
        want = oracle(x, 5, indptr, nbr[used], 0.01, 100, reduce, w[used], 120, bits=7)
        np.testing.assert_array_equal(got, want)


def _call(**overrides):
    args = dict(x_q=np.zeros((4, 2), np.uint8), x_zp=0, indptr=np.array([0, 1, 3]),
                src=np.array([0, 3, 1]), multiplier=0.5, y_zp=0, reduce="sum", w_q=None, w_zp=0)
    args.update(overrides)
    return qaggregate(**args)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"x_q": np.zeros((4, 2), np.int8)}, "x_q must have dtype uint8, got int8"),
    ({"x_q": np.zeros((4, 2), np.float32)}, "x_q must have dtype uint8, got float32"),
    ({"x_q": np.zeros(8, np.uint8)}, r"x_q must have 2 dimension\(s\)"),
    ({"indptr": np.array([0.0, 1.0, 3.0])}, "indptr must hold integer ids, got dtype float64"),
    ({"src": np.array([0, 4, 1])}, r"src\[1\] = 4 is out of range \[0, 4\)"),
    ({"src": np.array([0, 1, -1])}, r"src\[2\] = -1 is out of range \[0, 4\)"),
    ({"indptr": np.array([0, 2, 1, 3])}, r"indptr must be non-decreasing, got indptr\[1\] = 2"),
    ({"indptr": np.array([1, 1, 3])}, r"indptr\[0\] must be 0, got 1"),
    ({"indptr": np.array([0, 1, 2])}, r"indptr\[-1\] = 2 must equal the number of edges"),
    ({"indptr": np.zeros(0, np.int64)}, "indptr must have num_dst"),
    ({"w_q": np.zeros(2, np.uint8)}, "w_q must have 3 rows"),
    ({"w_q": np.zeros(3, np.int8)}, "w_q must have dtype uint8"),
    ({"x_zp": 256}, r"x_zp must be in \[0, 255\], got 256"),
    ({"y_zp": -1}, r"y_zp must be in \[0, 255\], got -1"),
    ({"w_zp": 3.0}, "w_zp must be an integer, got 3.0"),
    ({"x_zp": True}, "x_zp must be an integer"),
    ({"multiplier": 0.0}, "multiplier must be a finite float32 > 0, got 0.0"),
    ({"multiplier": -1.0}, "multiplier must be a finite float32 > 0"),
    ({"multiplier": float("nan")}, "multiplier must be a finite float32 > 0"),
    ({"multiplier": 1e39}, "multiplier must be a finite float32 > 0"),
    ({"multiplier": np.array([0.5, 0.5])}, "multiplier must be a real scalar"),
    ({"reduce": "min"}, "reduce must be one of"),
    ({"reduce": ["sum"]}, "reduce must be one of"),
    ({"bits": 0}, r"bits must be in \[1, 8\], got 0"),
    ({"bits": 9}, r"bits must be in \[1, 8\], got 9"),
])
def test_bad_inputs_raise_value_error_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        _call(**overrides)


def test_bad_thread_counts_raise():
    for threads in (0, -2, 257):
        with pytest.raises(ValueError, match=f"num_threads must be in \\[1, 256\\], got {threads}"):
            qaggregate(np.zeros((1, 1), np.uint8), 0, [0, 0], [], 1.0, 0, num_threads=threads)


def test_out_of_range_src_is_found_in_every_thread_part(make_csr):
    indptr, src, _ = make_csr(2000, 50_000, 300)
    x = np.zeros((300, 16), np.uint8)
    for pos in (0, 24_999, 49_999):
        bad = src.copy()
        bad[pos] = 300 + pos
        with pytest.raises(ValueError, match=rf"src\[{pos}\] = {300 + pos} is out of range"):
            qaggregate(x, 0, indptr, bad, 1.0, 0, num_threads=2)


@pytest.mark.slow
@pytest.mark.parametrize("reduce", REDUCES)
def test_large_graph_matches_oracle(make_csr, reduce):
    rng = np.random.default_rng(11)
    indptr, src, _ = make_csr(100_000, 1_000_000, 100_000, empty_frac=0.05)
    x = rng.integers(0, 256, (100_000, 64), dtype=np.uint8)
    w = rng.integers(0, 256, len(src), dtype=np.uint8)
    got = qaggregate(x, 120, indptr, src, 0.002, 128, reduce, w, 100)
    np.testing.assert_array_equal(got, oracle(x, 120, indptr, src, 0.002, 128, reduce, w, 100))


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("feats", [64, 128, 136, 200])
def test_baseline_sums_around_the_uint16_flush(reduce, feats):
    """The `baseline` level's SSE2 64-column sum keeps uint16 partials for 257 rows at a time:
    in-degrees on both sides of each flush, rows of 255 (the largest partials) and a zero point
    that leaves centred sums of both signs, against the oracle at that level explicitly."""
    rng = np.random.default_rng(feats)
    degrees = np.array([1, 256, 257, 258, 0, 514, 515, 600, 3])
    indptr = np.concatenate([[0], np.cumsum(degrees)]).astype(np.int64)
    src = rng.integers(0, 50, int(indptr[-1]))
    x = rng.integers(0, 256, (50, feats), dtype=np.uint8)
    x[::3] = 255
    mult = 1.0 if reduce == "mean" else 1 / 40
    got = qaggregate(x, 170, indptr, src, mult, 128, reduce, isa="baseline")
    want = oracle(x, 170, indptr, src, mult, 128, reduce)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 20  # outputs spread, not pinned at a clamp
