"""The multiplier and the requantisation, checked on hand-computed cases."""

from __future__ import annotations

import numpy as np
from qgnn.contract import mean_multiplier, multiplier, quantize_bias, requantise


def test_multiplier_is_float32_left_to_right() -> None:
    assert multiplier(np.float32(0.5), np.float32(0.125), np.float32(0.25)) == 1.0
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b, c = rng.uniform(1e-4, 1, 3).astype(np.float32)
        m = multiplier(a, c, b)
        assert m.dtype == np.float32 and m == np.float32(np.float32(a * b) / c)
        assert multiplier(a, c) == np.float32(a / c)


def test_per_channel_multipliers_are_elementwise() -> None:
    per_channel = multiplier(np.float32(0.5), np.float32(0.125), np.array([0.25, 0.5], np.float32))
    assert per_channel.dtype == np.float32
    np.testing.assert_array_equal(per_channel, [1.0, 2.0])


def test_requantise_rounds_half_to_even_and_saturates() -> None:
    acc = np.array([5, 7, -9, 1000, -1000, 3], np.int64)  # * 0.5 = 2.5, 3.5, -4.5, ...
    got = requantise(acc, np.float32(0.5), 10, 8)
    np.testing.assert_array_equal(got, [12, 14, 6, 255, 0, 12])
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(requantise(acc, np.float32(0.5), 10, 4), [12, 14, 6, 15, 0, 12])


def test_requantise_clips_infinite_products() -> None:
    acc = np.array([2**31 - 1, -(2**31)], np.int64)
    np.testing.assert_array_equal(requantise(acc, np.float32(3e38), 0, 8), [255, 0])


def test_mean_multiplier_divides_by_the_degree_floor_one() -> None:
    got = mean_multiplier(np.float32(1.0), np.array([0, 1, 4]))
    assert got.shape == (3, 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:, 0], [1.0, 1.0, 0.25])


def test_bias_rounds_half_to_even_on_the_accumulator_grid() -> None:
    got = quantize_bias(np.array([0.25, 0.75, -0.25, 1.0], np.float32), np.float32(0.5),
                        np.float32(1.0))  # / 0.5 = 0.5, 1.5, -0.5, 2
    np.testing.assert_array_equal(got, [0, 2, -0, 2])
    per_channel = quantize_bias(np.array([1.0, 1.0], np.float32), np.float32(0.5),
                                np.array([0.25, 1.0], np.float32))
    np.testing.assert_array_equal(per_channel, [8, 2])
