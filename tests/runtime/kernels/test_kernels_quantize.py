"""Contract quantisation helpers against numpy float32 formulas: bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime.kernels import dequantize_u8, quantize_s8, quantize_u8, requant_multiplier


def u8_oracle(x, scale, zp, bits=8):
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.clip(np.rint(x / np.float32(scale)) + np.float32(zp), 0, 2**bits - 1)
    return q.astype(np.uint8)


def s8_oracle(x, scale):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.clip(np.rint(x / np.float32(scale)), -127, 127).astype(np.int8)


def test_quantize_matches_oracle_and_keeps_shape():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((37, 5, 11)) * 3).astype(np.float32)
    for scale, zp in ((0.02, 128), (0.1, 0), (1e-3, 255), (7.0, 3)):
        got = quantize_u8(x, scale, zp)
        assert got.shape == x.shape and got.dtype == np.uint8
        np.testing.assert_array_equal(got, u8_oracle(x, scale, zp))
        np.testing.assert_array_equal(quantize_s8(x, scale), s8_oracle(x, scale))


def test_half_way_values_round_to_even_and_extremes_saturate():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, np.inf, -np.inf, 3e38, -3e38, 0.0], np.float32)
    np.testing.assert_array_equal(quantize_u8(x, 1.0, 10),
                                  [10, 12, 12, 10, 8, 255, 0, 255, 0, 10])
    np.testing.assert_array_equal(quantize_s8(x, 1.0), [0, 2, 2, 0, -2, 127, -127, 127, -127, 0])
    np.testing.assert_array_equal(quantize_u8(x, 1e-30, 0), u8_oracle(x, 1e-30, 0))


def test_narrow_bits_clamp():
    x = np.linspace(-3, 3, 999, dtype=np.float32)
    for bits in (1, 4):
        got = quantize_u8(x, 0.1, 7, bits=bits)
        np.testing.assert_array_equal(got, u8_oracle(x, 0.1, 7, bits))
        assert got.max() == 2**bits - 1


def test_requant_multiplier_is_float32_left_to_right():
    rng = np.random.default_rng(5)
    s_x, s_w, s_y = (rng.uniform(1e-3, 1, 500).astype(np.float32) for _ in range(3))
    for a, b, c in zip(s_x, s_w, s_y, strict=True):
        m = requant_multiplier(a, c, b)
        assert m.dtype == np.float32 and m == np.float32(np.float32(a * b) / c)
        assert requant_multiplier(a, c) == np.float32(a / c)
    # float64 arithmetic rounds differently for some scales: the helper must not use it
    naive = np.array([np.float32(float(a) * float(b) / float(c))
                      for a, b, c in zip(s_x, s_w, s_y, strict=True)])
    exact = np.array([requant_multiplier(a, c, b) for a, b, c in zip(s_x, s_w, s_y, strict=True)])
    assert (naive != exact).any()
    with pytest.raises(ValueError, match="y_scale must be a finite float32 > 0"):
        requant_multiplier(0.1, 0.0)
    with pytest.raises(ValueError, match="multiplier must be a finite float32 > 0"):
        requant_multiplier(1e-30, 1e30)


def test_dequantize_is_exact_float32():
    q = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for scale, zp in ((0.02, 128), (3.3, 0)):
        want = (q.astype(np.int32) - zp).astype(np.float32) * np.float32(scale)
        np.testing.assert_array_equal(dequantize_u8(q, scale, zp), want)
    x = np.linspace(-2, 2, 1001, dtype=np.float32)
    back = dequantize_u8(quantize_u8(x, 0.02, 100), 0.02, 100)
    assert np.abs(back - x).max() <= 0.01 + 1e-6  # half a step


def test_large_arrays_and_thread_counts_agree(parts_used):
    x = np.random.default_rng(1).standard_normal(300_001).astype(np.float32)
    one = quantize_u8(x, 0.01, 128, num_threads=1)
    np.testing.assert_array_equal(one, quantize_u8(x, 0.01, 128, num_threads=3))
    assert parts_used() == 3
    np.testing.assert_array_equal(one, u8_oracle(x, 0.01, 128))
    np.testing.assert_array_equal(quantize_s8(x, 0.01, num_threads=2), s8_oracle(x, 0.01))


def test_nan_is_refused_with_its_position():
    x = np.zeros(200_000, np.float32)
    x[150_001] = np.nan
    with pytest.raises(ValueError, match="x has NaN at flat index 150001"):
        quantize_u8(x, 1.0, 0)
    with pytest.raises(ValueError, match="x has NaN at flat index 150001"):
        quantize_s8(x, 1.0, num_threads=2)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: quantize_u8(np.zeros(3, np.float64), 1.0, 0), "x must have dtype float32"),
    (lambda: quantize_u8(np.zeros(3, np.float32), 0.0, 0), "scale must be a finite float32 > 0"),
    (lambda: quantize_u8(np.zeros(3, np.float32), 1.0, 256), r"zero_point must be in \[0, 255\]"),
    (lambda: quantize_s8(np.zeros(3, np.float32), float("inf")), "scale must be a finite"),
    (lambda: dequantize_u8(np.zeros(3, np.int8), 1.0, 0), "q must have dtype uint8"),
])
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
