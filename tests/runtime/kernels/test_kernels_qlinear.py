"""qlinear (u8 x s8 -> int32 -> requantised u8) against the contract's integer oracle."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime.kernels import qlinear


def oracle(x_q, x_zp, w_q, bias, multiplier, y_zp, bits=8):
    """acc = (x - zp) @ w + bias in int64, wrapped to int32, requantised in float32."""
    acc = (x_q.astype(np.int64) - x_zp) @ w_q.astype(np.int64)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    acc = acc.astype(np.int32)
    m = np.broadcast_to(np.asarray(multiplier, np.float32), (w_q.shape[1],))
    with np.errstate(over="ignore"):
        y = np.rint(acc.astype(np.float32) * m) + np.float32(y_zp)
    return np.clip(y, 0, 2**bits - 1).astype(np.uint8)


@pytest.mark.parametrize("n", [1, 3, 4, 9])
@pytest.mark.parametrize("k", [1, 3, 4, 6, 64, 129])
@pytest.mark.parametrize("m", [1, 15, 16, 17, 40, 64, 100, 130])
def test_matches_oracle_all_block_shapes(isa, n, k, m):
    rng = np.random.default_rng(n * 1000 + k * 10 + m)
    x = rng.integers(0, 256, (n, k), dtype=np.uint8)
    w = rng.integers(-127, 128, (k, m), dtype=np.int8)
    bias = rng.integers(-5000, 5000, m).astype(np.int32)
    mult = rng.uniform(1e-4, 5e-3, m).astype(np.float32)
    np.testing.assert_array_equal(qlinear(x, 71, w, bias, mult, 128),
                                  oracle(x, 71, w, bias, mult, 128))
    np.testing.assert_array_equal(qlinear(x, 0, w, None, 0.002, 3),
                                  oracle(x, 0, w, None, 0.002, 3))


def test_hand_computed_with_ties_to_even(isa):
    x = np.array([[3, 1]], np.uint8)  # minus zp 1: [2, 0]
    w = np.array([[1, -1, 3], [7, 7, 7]], np.int8)  # acc = [2, -2, 6]
    bias = np.array([1, 0, 1], np.int32)  # acc = [3, -2, 7]
    got = qlinear(x, 1, w, bias, np.array([0.5, 0.5, 0.5], np.float32), 10)
    # 1.5 -> 2, -1 -> -1, 3.5 -> 4 ; + 10
    np.testing.assert_array_equal(got, [[12, 9, 14]])


def test_saturation_extremes_and_int32_wrap(isa):
    x = np.array([[255] * 5, [0] * 5], np.uint8)
    w = np.array([[127, -128]] * 5, np.int8)
    for mult in (1e-30, 1.0, 1e30):
        for zps in ((0, 0), (255, 255), (0, 255)):
            np.testing.assert_array_equal(qlinear(x, zps[0], w, None, mult, zps[1]),
                                          oracle(x, zps[0], w, None, mult, zps[1]))
    big = np.array([np.iinfo(np.int32).max, np.iinfo(np.int32).min], np.int32)
    np.testing.assert_array_equal(qlinear(x, 0, w, big, 1e-9, 100),
                                  oracle(x, 0, w, big, 1e-9, 100))


@pytest.mark.parametrize("bits", [2, 4])
def test_narrow_output_bits(isa, bits):
    rng = np.random.default_rng(bits)
    x = rng.integers(0, 2**bits, (13, 40), dtype=np.uint8)
    w = rng.integers(-127, 128, (40, 33), dtype=np.int8)
    for y_zp in (0, 2**bits - 1, 255):
        got = qlinear(x, 1, w, None, 0.01, y_zp, bits=bits)
        np.testing.assert_array_equal(got, oracle(x, 1, w, None, 0.01, y_zp, bits))


def test_empty_dimensions(isa):
    w = np.ones((4, 3), np.int8)
    assert qlinear(np.zeros((0, 4), np.uint8), 0, w, None, 1.0, 0).shape == (0, 3)
    assert qlinear(np.zeros((2, 4), np.uint8), 0, np.ones((4, 0), np.int8), None,
                   np.zeros(0, np.float32), 0).shape == (2, 0)
    # K = 0: the product is empty, acc = bias
    got = qlinear(np.zeros((2, 0), np.uint8), 5, np.zeros((0, 3), np.int8),
                  np.array([2, 4, 6], np.int32), 0.5, 1)
    np.testing.assert_array_equal(got, [[2, 3, 4]] * 2)


def test_threads_and_paths_agree(isa, parts_used):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2017, 96), dtype=np.uint8)
    w = rng.integers(-127, 128, (96, 72), dtype=np.int8)
    mult = np.float32(3e-4)
    runs = []
    for t in (1, 2, 5):
        runs.append(qlinear(x, 128, w, None, mult, 128, num_threads=t))
        assert parts_used() == t
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0], other)
    np.testing.assert_array_equal(runs[0], oracle(x, 128, w, None, mult, 128))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"x_q": np.zeros((2, 4), np.int8)}, "x_q must have dtype uint8, got int8"),
    ({"w_q": np.zeros((4, 3), np.uint8)}, "w_q must have dtype int8, got uint8"),
    ({"w_q": np.zeros((3, 4), np.int8)}, r"w_q must have 4 rows \(\(K, M\) with K"),
    ({"bias_int32": np.zeros(3, np.int64)}, "bias_int32 must have dtype int32, got int64"),
    ({"bias_int32": np.zeros(2, np.int32)}, "bias_int32 must have 3 rows"),
    ({"multiplier": np.ones(2, np.float32)}, "multiplier must have 3 rows"),
    ({"multiplier": np.array([1.0, 0.0, 1.0])}, r"multiplier\[1\] must be a finite float32 > 0"),
    ({"multiplier": np.ones((3, 1), np.float32)}, "multiplier must be a float scalar or a 1-D"),
    ({"multiplier": np.ones(3, np.int32)}, "multiplier must be a float scalar or a 1-D"),
    ({"multiplier": -2.0}, "multiplier must be a finite float32 > 0"),
    ({"x_zp": 300}, r"x_zp must be in \[0, 255\], got 300"),
    ({"bits": 0}, r"bits must be in \[1, 8\], got 0"),
])
def test_bad_inputs(kwargs, message):
    args = dict(x_q=np.zeros((2, 4), np.uint8), x_zp=0, w_q=np.zeros((4, 3), np.int8),
                bias_int32=None, multiplier=1.0, y_zp=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        qlinear(**args)


@pytest.mark.parametrize("k, m", [(1, 1), (3, 17), (129, 40), (1433, 64)])
def test_a_kept_pack_gives_the_same_bytes_call_after_call(isa, k, m):
    """The engine packs each weight once and passes the pack on every call: the bytes must be
    those of packing per call, for every row count, with and without an output table, and the
    pack must outlive the array it was made from (it holds its own copy)."""
    from qgnn.runtime.kernels import qlinear_pack

    rng = np.random.default_rng(k * 7 + m)
    w = rng.integers(-128, 128, (k, m), dtype=np.int8)
    bias = rng.integers(-5000, 5000, m).astype(np.int32)
    mult = rng.uniform(1e-4, 5e-3, m).astype(np.float32)
    packed = qlinear_pack(w.copy())
    table = rng.integers(0, 256, (m, 256), dtype=np.uint8)
    for n in (1, 2, 5, 16, 67):
        x = rng.integers(0, 256, (n, k), dtype=np.uint8)
        want = oracle(x, 37, w, bias, mult, 90)
        np.testing.assert_array_equal(qlinear(x, 37, w, bias, mult, 90, packed=packed), want)
        np.testing.assert_array_equal(
            qlinear(x, 37, w, bias, mult, 90, table=table, packed=packed),
            qlinear(x, 37, w, bias, mult, 90, table=table))


def test_a_pack_of_another_shape_or_level_is_refused(isa):
    from qgnn.runtime import kernels
    from qgnn.runtime.kernels import qlinear_pack

    w = np.ones((4, 3), np.int8)
    x = np.ones((2, 4), np.uint8)
    with pytest.raises(ValueError, match=r"packed holds a \(3, 3\) weight, w_q is \(4, 3\)"):
        qlinear(x, 0, w, None, 0.1, 0, packed=qlinear_pack(np.ones((3, 3), np.int8)))
    with pytest.raises(ValueError, match="must come from this module's qlinear_pack"):
        qlinear(x, 0, w, None, 0.1, 0, packed=object())
    built = kernels.build_info()["isa_built"]
    others = [lv for lv in kernels.levels_supported() if lv != isa and lv in built]
    for other in others:
        with pytest.raises(ValueError, match="must come from this module's qlinear_pack"):
            qlinear(x, 0, w, None, 0.1, 0, packed=qlinear_pack(w, isa=other))


@pytest.mark.parametrize("m", [1, 3, 4, 7, 12, 16, 20, 33, 128])
def test_baseline_requantises_every_width(m):
    """At `baseline` each 16-column tile is requantised 16 and then 4 columns at a time in SSE2
    registers, the last m % 4 one by one: per-column multipliers, half-way ties, outputs
    saturating at both ends and int32 sums that wrap, against the oracle at that level."""
    rng = np.random.default_rng(m)
    x = rng.integers(0, 256, (7, 40), dtype=np.uint8)
    w = rng.integers(-127, 128, (40, m), dtype=np.int8)
    bias = rng.integers(-2**31, 2**31 - 1, m, dtype=np.int64).astype(np.int32)
    mult = rng.choice(np.array([0.5, 1e-9, 3e-4, 7e-3, 40.0], np.float32), m)
    got = qlinear(x, 97, w, bias, mult, 128, isa="baseline")
    np.testing.assert_array_equal(got, oracle(x, 97, w, bias, mult, 128))
    ties = qlinear(x, 97, w, None, np.float32(0.5), 128, isa="baseline")
    np.testing.assert_array_equal(ties, oracle(x, 97, w, None, 0.5, 128))
    if m >= 12:  # enough columns for both clamps to be hit
        assert got.min() == 0 and got.max() == 255


@pytest.mark.parametrize("m", range(1, 17))
def test_narrow_outputs_match_the_oracle_without_reading_past_x(isa, m, guarded):
    """M <= 16 (a classifier's last layer) runs vectorised over K at the x86 levels, several
    rows per block: every width, K below, at and past a vector's 16 / 32 / 64 bytes, row counts
    that leave part of a block, with x ending right before an unreadable page, and with a
    per-column output table, against the oracle."""
    rng = np.random.default_rng(m)
    for k in (1, 2, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 128, 129):
        w = rng.integers(-128, 128, (k, m), dtype=np.int8)
        bias = rng.integers(-2**31, 2**31 - 1, m, dtype=np.int64).astype(np.int32)
        mult = rng.choice(np.array([0.5, 1e-9, 3e-4, 7e-3, 40.0], np.float32), m)
        for n in (1, 2, 3, 5, 17, 35):
            x = guarded(rng.integers(0, 256, (n, k), dtype=np.uint8))
            want = oracle(x, 97, w, bias, mult, 128)
            np.testing.assert_array_equal(qlinear(x, 97, w, bias, mult, 128), want)
        table = rng.integers(0, 256, (m, 256), dtype=np.uint8)
        got = qlinear(x, 97, w, bias, mult, 128, table=table)
        np.testing.assert_array_equal(got, np.take_along_axis(table.T, want.astype(np.intp), 0))


@pytest.mark.parametrize("m", [1, 3, 8, 16])
def test_narrow_outputs_agree_across_threads(isa, parts_used, m, guarded):
    """Parts of a narrow product split on whole 4-row groups, not on the narrow path's blocks
    (up to 16 rows): each part ends on a partial block, which must still give the oracle's
    bytes and never read past x."""
    rng = np.random.default_rng(m)
    n = 3 * 2**21 // (130 * m) + 7  # enough work for three parts, 7 rows past a 4-row group
    x = guarded(rng.integers(0, 256, (n, 130), dtype=np.uint8))
    w = rng.integers(-128, 128, (130, m), dtype=np.int8)
    want = oracle(x, 5, w, None, 1e-3, 100)
    for t in (1, 2, 3):
        np.testing.assert_array_equal(qlinear(x, 5, w, None, 1e-3, 100, num_threads=t), want)
        assert parts_used() == t
