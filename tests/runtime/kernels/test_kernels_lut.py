"""lut_u8 and the float step as a byte table (float_step_table, compose_tables), lut2_u8 and the
two-input step as a pair table (float_step_pair_table): tables equal numpy indexing, and a
tabulated step equals float_step_q8 bit for bit (run once per ISA level)."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime.kernels import (
    compose_tables,
    float_step_pair_table,
    float_step_q8,
    float_step_table,
    lut2_u8,
    lut_u8,
    qlinear,
    scalar_constants,
)

f32 = np.float32


@pytest.mark.parametrize("shape", [(1, 1), (9, 7), (3000, 130), (5, 1500), (4, 3, 16), (33,)])
@pytest.mark.parametrize("per_column", [True, False])
def test_table_lookup_equals_numpy(shape, per_column, guarded) -> None:
    rng = np.random.default_rng(sum(shape))
    x = guarded(rng.integers(0, 256, shape).astype(np.uint8))
    table = rng.integers(0, 256, (shape[-1] if per_column else 1, 256)).astype(np.uint8)
    want = table[np.arange(shape[-1]) % len(table), x]
    for threads in (1, 2, 3):
        got = lut_u8(x, guarded(table), num_threads=threads)
        assert got.shape == shape and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


def test_tabulated_steps_equal_the_float_step() -> None:
    """Per-column and shared constants, ties, saturation, narrow outputs; two steps composed
    equal the two run one after the other."""
    rng = np.random.default_rng(3)
    cols = 70
    x = rng.integers(0, 256, (2000, cols)).astype(np.uint8)
    bias = (rng.integers(-32, 33, cols) / 8).astype(f32)
    affine = (rng.normal(size=cols), rng.normal(size=cols))
    steps = [(0.375, 128, [("add", 0, bias)], 0.25, 128, 8),
             (0.05, 7, [("relu", 0, None)], 0.04, 0, 8),
             (0.05, 7, [("mul", 0, f32(1.7)), ("div", 0, f32(3.0))], 0.01, 3, 4),
             (0.1, 100, [("affine_f64", 0, affine), ("rsub", 0, bias)], 0.02, 90, 8)]
    for a_scale, a_zp, ops, y_scale, y_zp, bits in steps:
        table = float_step_table(a_scale, a_zp, ops, y_scale, y_zp, cols, bits=bits)
        assert table.shape == ((1, 256) if ops[0][0] in ("relu", "mul") else (cols, 256))
        want = float_step_q8(x, a_scale, a_zp, ops, y_scale, y_zp, bits=bits)
        np.testing.assert_array_equal(lut_u8(x, table), want, str(ops))
    first, then = steps[0], steps[1]
    both = compose_tables(float_step_table(*first[:5], cols), float_step_table(*then[:5], cols))
    want = float_step_q8(float_step_q8(x, *first[:5]), *then[:5])
    np.testing.assert_array_equal(lut_u8(x, both), want)
    assert want.min() == 0 and want.max() > 200


@pytest.mark.parametrize(("table", "message"), [
    (np.zeros((1, 255), np.uint8), r"table must be \(1, 256\) or \(6, 256\)"),
    (np.zeros((5, 256), np.uint8), r"table must be \(1, 256\) or \(6, 256\)"),
    (np.zeros((1, 256), np.int8), "table must have dtype uint8"),
    (np.zeros(256, np.uint8), "table must have 2 dimension"),
])
def test_rejects_bad_tables(table, message) -> None:
    with pytest.raises(ValueError, match=message):
        lut_u8(np.zeros((4, 6), np.uint8), table)


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="x_q must have dtype uint8"):
        lut_u8(np.zeros((4, 6), np.float32), np.zeros((1, 256), np.uint8))
    with pytest.raises(ValueError, match="x_q must have at least one dimension"):
        lut_u8(np.uint8(3), np.zeros((1, 256), np.uint8))
    assert lut_u8(np.zeros((0, 6), np.uint8), np.zeros((1, 256), np.uint8)).shape == (0, 6)


@pytest.mark.parametrize("cols", [1, 7, 70, 1500])
@pytest.mark.parametrize("per_column", [True, False])
def test_float_step_and_qlinear_map_their_outputs_through_a_table(cols, per_column) -> None:
    """The table argument gives what lut_u8 gives on the plain output (rows that straddle the
    float step's blocks included)."""
    rng = np.random.default_rng(cols)
    a = rng.integers(0, 256, (900, cols)).astype(np.uint8)
    b = rng.integers(0, 256, (900, cols)).astype(np.uint8)
    table = rng.integers(0, 256, (cols if per_column else 1, 256)).astype(np.uint8)
    ops = [("add", 0, rng.normal(size=cols).astype(f32)), ("add_b", 0, None)]
    for threads in (1, 2):
        plain = float_step_q8(a, 0.05, 7, ops, 0.04, 120, b=b, b_scale=0.03, b_zp=9,
                              num_threads=threads)
        got = float_step_q8(a, 0.05, 7, ops, 0.04, 120, b=b, b_scale=0.03, b_zp=9,
                            num_threads=threads, table=table)
        np.testing.assert_array_equal(got, lut_u8(plain, table))
    w = rng.integers(-127, 128, (40, cols)).astype(np.int8)
    x = rng.integers(0, 256, (300, 40)).astype(np.uint8)
    plain = qlinear(x, 5, w, None, 1e-3, 100)
    np.testing.assert_array_equal(qlinear(x, 5, w, None, 1e-3, 100, table=table),
                                  lut_u8(plain, table))
    with pytest.raises(ValueError, match=r"table must be \(1, 256\) or"):
        qlinear(x, 5, w, None, 1e-3, 100, table=np.zeros((cols + 1, 256), np.uint8))
    with pytest.raises(ValueError, match=r"table must be \(1, 256\) or"):
        float_step_q8(a, 0.05, 7, [], 0.04, 120, table=np.zeros((2, 255), np.uint8))


@pytest.mark.parametrize("shape", [(1, 1), (9, 7), (3000, 130), (5, 1500), (4, 3, 16), (33,)])
def test_pair_table_lookup_equals_numpy(shape, guarded) -> None:
    rng = np.random.default_rng(sum(shape) + 1)
    a = guarded(rng.integers(0, 256, shape).astype(np.uint8))
    b = guarded(rng.integers(0, 256, shape).astype(np.uint8))
    table = rng.integers(0, 256, (256, 256)).astype(np.uint8)
    for threads in (1, 2, 3):
        got = lut2_u8(a, b, guarded(table), num_threads=threads)
        assert got.shape == shape and got.dtype == np.uint8
        np.testing.assert_array_equal(got, table[a, b])


def test_pair_tabulated_steps_equal_the_float_step() -> None:
    """Every byte pair: the add of two dequantised inputs (SAGE's lin_l + lin_r), with scalar
    ops before and after the combine, narrow outputs, saturation at both ends."""
    grid = np.arange(256, dtype=np.uint8)
    a = np.repeat(grid, 256).reshape(256, 256)
    b = np.tile(grid, 256).reshape(256, 256)
    steps = [(0.0113, 128, [("add_b", 0, None)], 0.0215, 127, 0.0203, 128, 8),
             (0.05, 7, [("mul", 1, f32(0.5)), ("add_b", 0, None), ("relu", 0, None)],
              0.01, 3, 0.03, 250, 8),
             (0.1, 100, [("add_b", 0, None), ("sub", 0, f32(0.25))], 0.02, 9, 0.2, 0, 4)]
    for a_scale, a_zp, ops, y_scale, y_zp, b_scale, b_zp, bits in steps:
        table = float_step_pair_table(a_scale, a_zp, ops, y_scale, y_zp, b_scale, b_zp,
                                      bits=bits)
        want = float_step_q8(a, a_scale, a_zp, ops, y_scale, y_zp, b=b, b_scale=b_scale,
                             b_zp=b_zp, bits=bits)
        np.testing.assert_array_equal(lut2_u8(a, b, table), want, str(ops))
        assert want.min() == (y_zp if ("relu", 0, None) in ops else 0)
        assert want.max() == 2 ** bits - 1


def test_pair_tables_need_scalar_constants() -> None:
    per_column = [("add", 0, np.ones(4, f32)), ("add_b", 0, None)]
    assert not scalar_constants(per_column)
    assert scalar_constants([("add", 0, f32(1.0)), ("add_b", 0, None), ("relu", 0, None)])
    with pytest.raises(ValueError, match="pair table needs scalar constants"):
        float_step_pair_table(0.1, 0, per_column, 0.1, 0, 0.1, 0)


def test_pair_table_rejects_bad_arguments() -> None:
    a = np.zeros((4, 6), np.uint8)
    with pytest.raises(ValueError, match=r"table must be \(256, 256\)"):
        lut2_u8(a, a, np.zeros((1, 256), np.uint8))
    with pytest.raises(ValueError, match="b_q has shape"):
        lut2_u8(a, np.zeros((4, 5), np.uint8), np.zeros((256, 256), np.uint8))
    with pytest.raises(ValueError, match="a_q must have dtype uint8"):
        lut2_u8(a.astype(np.int8), a, np.zeros((256, 256), np.uint8))
    assert lut2_u8(a[:0], a[:0], np.zeros((256, 256), np.uint8)).shape == (0, 6)
