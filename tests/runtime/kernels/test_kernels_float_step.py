"""float_step_q8 against numpy float32 formulas, bit for bit (run once per ISA level)."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime.kernels import compile_float_step, float_step_q8

f32 = np.float32
BINARY = {"add": np.add, "sub": np.subtract, "rsub": lambda v, c: c - v, "mul": np.multiply,
          "div": np.divide}


def oracle(a, a_scale, a_zp, ops, y_scale, y_zp, b=None, b_scale=1.0, b_zp=0, bits=8):
    """The ops one numpy float32 (or float64, for affine_f64) operation at a time."""
    regs = [(a.astype(np.int32) - a_zp).astype(f32) * f32(a_scale), None]
    if b is not None:
        regs[1] = (b.astype(np.int32) - b_zp).astype(f32) * f32(b_scale)
    with np.errstate(over="ignore", invalid="ignore"):
        for name, reg, c in ops:
            v = regs[reg]
            if name == "affine_f64":
                regs[reg] = (v.astype(np.float64) * c[0] + c[1]).astype(f32)
            elif name == "relu":
                regs[reg] = np.where(v < 0, f32(0), v)
            elif name == "add_b":
                regs[0] = regs[0] + regs[1]
            else:
                regs[reg] = BINARY[name](v, np.asarray(c, f32))
        q = np.clip(np.rint(regs[0] / f32(y_scale)) + f32(y_zp), 0, 2**bits - 1)
    return q.astype(np.uint8)


def _u8(rng, shape):
    return rng.integers(0, 256, shape).astype(np.uint8)


@pytest.mark.parametrize("shape", [(1, 1), (9, 7), (3000, 130), (5, 1500), (4, 3, 16), (33,)])
def test_every_op_alone_and_chained_equals_numpy(shape, guarded) -> None:
    rng = np.random.default_rng(sum(shape))
    cols = shape[-1]
    a, b = guarded(_u8(rng, shape)), guarded(_u8(rng, shape))
    bias = rng.normal(size=cols).astype(f32)
    alpha, beta = rng.normal(size=cols).astype(f32), rng.normal(size=cols).astype(f32)
    affine = (alpha.astype(np.float64), beta.astype(np.float64))
    programs = [[], [("add", 0, bias)], [("sub", 0, f32(0.3))], [("rsub", 0, bias)],
                [("mul", 0, f32(1.7))], [("div", 0, f32(3.0))], [("relu", 0, None)],
                [("affine_f64", 0, affine)],
                [("mul", 0, bias), ("div", 0, f32(2.0)), ("add", 0, f32(0.1)), ("relu", 0, None),
                 ("affine_f64", 0, affine), ("sub", 0, bias)]]
    for ops in programs:
        for threads in (1, 2):
            got = float_step_q8(a, 0.05, 7, ops, 0.04, 120, num_threads=threads)
            assert got.shape == shape and got.dtype == np.uint8
            np.testing.assert_array_equal(got, oracle(a, 0.05, 7, ops, 0.04, 120), str(ops))
    two = [("mul", 1, f32(1.25)), ("add", 0, bias), ("add_b", 0, None), ("relu", 0, None)]
    np.testing.assert_array_equal(
        float_step_q8(a, 0.05, 7, two, 0.06, 3, b=b, b_scale=0.03, b_zp=200),
        oracle(a, 0.05, 7, two, 0.06, 3, b=b, b_scale=0.03, b_zp=200))


def test_ties_round_to_even_and_both_ends_saturate() -> None:
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    # float(q - 0) * 0.5 / 1.0: every odd q is a tie k + 0.5
    got = float_step_q8(a, 0.5, 0, [], 1.0, 0)
    np.testing.assert_array_equal(got.ravel(), np.rint(np.arange(256) * 0.5).astype(np.uint8))
    assert (got.ravel()[[1, 3, 5]] == [0, 2, 2]).all()
    wide = float_step_q8(a, 1.0, 128, [("mul", 0, f32(1e30))], 1.0, 128)
    assert wide.min() == 0 and wide.max() == 255 and wide[8, 0] == 128
    for bits in (1, 4, 7):
        ops = [("add", 0, f32(0.25))]
        got = float_step_q8(a, 0.5, 64, ops, 0.5, 3, bits=bits)
        np.testing.assert_array_equal(got, oracle(a, 0.5, 64, ops, 0.5, 3, bits=bits))
        assert got.max() == 2**bits - 1 and got.min() == 0


def test_nan_gives_zero_and_infinities_saturate_in_every_lane() -> None:
    # (q - 7) * inf: NaN at q == 7, +inf above, -inf below; 37 values so the vector loops
    # of every level and their scalar tails both see all three
    a = (np.arange(37) % 3 + 6).astype(np.uint8).reshape(1, 37)
    got = float_step_q8(a, 1.0, 7, [("mul", 0, f32(np.inf))], 1.0, 4)
    want = np.where(a == 8, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(got, want)


def test_per_column_constants_follow_columns_across_blocks_and_threads() -> None:
    rng = np.random.default_rng(5)
    a = _u8(rng, (4001, 37))  # 37 divides no block; 4001 rows split unevenly over threads
    bias = (np.arange(37) * 10).astype(f32)
    got = float_step_q8(a, 1.0, 0, [("add", 0, bias.reshape(1, 37))], 1.0, 0, num_threads=2)
    np.testing.assert_array_equal(got, np.clip(a.astype(int) + bias, 0, 255).astype(np.uint8))


def test_a_compiled_program_is_reused_for_its_width() -> None:
    rng = np.random.default_rng(2)
    a = _u8(rng, (50, 6))
    ops = [("add", 0, np.linspace(-1, 1, 6, dtype=f32)), ("relu", 0, None)]
    program = compile_float_step(ops, 6)
    np.testing.assert_array_equal(float_step_q8(a, 0.1, 9, program, 0.1, 9),
                                  oracle(a, 0.1, 9, ops, 0.1, 9))


def test_bad_programs_and_inputs_are_refused() -> None:
    a = np.zeros((4, 3), np.uint8)
    cases = [
        ({"ops": [("pow", 0, None)]}, "unknown op"),
        ({"ops": [("add", 1, f32(1))]}, "register"),
        ({"ops": [("add_b", 0, None)]}, "combine"),
        ({"ops": [], "b": a}, "combine step"),
        ({"ops": [("add_b", 0, None)], "b": np.zeros((4, 2), np.uint8)}, "must be equal"),
        ({"ops": [("add", 0, np.ones(5, f32))]}, "does not fit"),
        ({"ops": [("add", 0, np.ones(3, np.float64))]}, "dtype float32"),
        ({"ops": [], "y_scale": 0.0}, "y_scale"),
        ({"ops": [], "bits": 9}, "bits"),
    ]
    for kwargs, message in cases:
        args = {"y_scale": 1.0, **kwargs}
        ops, y_scale = args.pop("ops"), args.pop("y_scale")
        with pytest.raises(ValueError, match=message):
            float_step_q8(a, 1.0, 0, ops, y_scale, 0, **args)
    with pytest.raises(ValueError, match="uint8"):
        float_step_q8(a.astype(np.int8), 1.0, 0, [], 1.0, 0)
    assert float_step_q8(np.zeros((0, 3), np.uint8), 1.0, 0, [], 1.0, 0).shape == (0, 3)
