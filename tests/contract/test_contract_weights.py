"""Weights are stored as uint8 ``w + 128`` with zero point 128 and read back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.contract import WEIGHT_STORAGE_OFFSET, weight_storage, weight_values


def test_every_int8_weight_round_trips() -> None:
    values = np.arange(-127, 128, dtype=np.int8)
    stored = weight_storage(values)
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored.astype(np.int64), values.astype(np.int64) + 128)
    np.testing.assert_array_equal(weight_values(stored, np.uint8(WEIGHT_STORAGE_OFFSET)), values)


def test_centred_storage_is_the_same_integer() -> None:
    values = np.array([[-127, 3], [127, 0]], np.int8)
    stored = weight_storage(values)
    np.testing.assert_array_equal(stored.astype(np.int32) - WEIGHT_STORAGE_OFFSET,
                                  values.astype(np.int32))


def test_per_column_zero_points_of_128_are_storage() -> None:
    stored = weight_storage(np.array([[1, -2]], np.int8))
    np.testing.assert_array_equal(weight_values(stored, np.array([128, 128], np.uint8)),
                                  [[1, -2]])


@pytest.mark.parametrize("zero_point", [np.uint8(0), np.uint8(127), np.array([128, 3], np.uint8),
                                        np.int8(0)])
def test_other_zero_points_are_not_storage(zero_point) -> None:
    assert weight_values(np.zeros((1, 2), np.uint8), zero_point) is None


def test_storage_refuses_other_dtypes() -> None:
    with pytest.raises(ValueError, match="weight values must be int8, got int16"):
        weight_storage(np.zeros(3, np.int16))
