"""The elementwise float step (docs/integer-formulation.md rule 5) on uint8 tensors, in one pass.

``y = quantize(ops(dequantize(a) [, dequantize(b)]))``: each input dequantised as
``float32(q - zp) * scale``, then the float32 ops in the order given, then
``clamp(rint(v / y_scale) + y_zp, 0, 2^bits - 1)`` (a true division, round half to even). These
are the operations onnxruntime performs for ``DequantizeLinear -> ops -> QuantizeLinear``, so the
result equals it bit for bit (the engine fuses such chains, runtime/engine/float_step.py).

An op is ``(name, register, constant)``; register 0 is ``a``'s value, 1 is ``b``'s (only before
the combine). Names: ``add``/``sub``/``mul``/``div`` (``v op c``), ``rsub`` (``c - v``) with a
float32 scalar or per-column ``(F,)`` constant; ``relu``; ``affine_f64`` with ``(alpha, beta)``
float64 per-column, ``float32(float64(v) * alpha + beta)`` (the exporter's eval BatchNorm);
``add_b`` (``a += b``, once, with two inputs).

With one input the step is a function of the column and the input byte alone, so
:func:`float_step_table` tabulates it (by running the step on the 256 bytes of each column) and
:func:`lut_u8` applies the table: the same outputs by construction, one table load per value
instead of the float arithmetic, and chained steps compose into one table
(:func:`compose_tables`). With two inputs and only scalar constants the step is a function of
the two bytes alone: :func:`float_step_pair_table` tabulates it on the 65,536 byte pairs and
:func:`lut2_u8` applies that 256 x 256 table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qgnn.runtime.kernels import _checks as ck
from qgnn.runtime.kernels._ext import ext

OPCODES = {"add": 0, "sub": 1, "rsub": 2, "mul": 3, "div": 4, "relu": 5, "affine_f64": 6,
           "add_b": 7}
FLOAT_OPS = ("add", "sub", "rsub", "mul", "div")

Op = tuple[str, int, Any]


@dataclass(frozen=True)
class Program:
    """Ops compiled for rows of ``columns`` values: what the C kernel reads."""

    steps: np.ndarray  # (n, 3) int32: opcode, register, constant row (-1: none)
    floats: np.ndarray  # (nf, columns) float32
    doubles: np.ndarray  # (nd, columns) float64


def _row(fn: str, value: Any, dtype: type, columns: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype != np.dtype(dtype):
        raise ValueError(f"{fn}: constant must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.size == 1:
        return np.full(columns, arr.reshape(())[()], dtype)
    if arr.shape not in ((columns,), (1, columns)):
        raise ValueError(f"{fn}: constant of shape {arr.shape} does not fit rows of {columns}")
    return arr.reshape(columns)


def compile_program(ops: Sequence[Op], columns: int) -> Program:
    """``ops`` as the kernel's op table and per-column constant rows (built once per width)."""
    fn = "float_step"
    steps, floats, doubles = [], [], []
    for name, register, constant in ops:
        if name not in OPCODES:
            raise ValueError(f"{fn}: unknown op {name!r}; expected one of {tuple(OPCODES)}")
        arg = -1
        if name in FLOAT_OPS:
            arg = len(floats)
            floats.append(_row(fn, constant, np.float32, columns))
        elif name == "affine_f64":
            arg = len(doubles)
            doubles += [_row(fn, c, np.float64, columns) for c in constant]
        steps.append((OPCODES[name], register, arg))
    return Program(np.array(steps, np.int32).reshape(-1, 3),
                   np.array(floats, np.float32).reshape(len(floats), columns),
                   np.array(doubles, np.float64).reshape(len(doubles), columns))


def float_step_q8(a: np.ndarray, a_scale: float, a_zp: int, ops: Sequence[Op] | Program,
                  y_scale: float, y_zp: int, *, b: np.ndarray | None = None,
                  b_scale: float = 1.0, b_zp: int = 0, bits: int = 8, num_threads: int = 2,
                  table: np.ndarray | None = None, isa: str | None = None) -> np.ndarray:
    """uint8 ``a`` (and ``b``, same shape) of any rank >= 1 -> uint8 of that shape; constants
    apply per column of the last axis. ``table`` ((1, 256) or (F, 256) uint8) then maps each
    output byte as :func:`lut_u8` would, in the same pass."""
    fn = "float_step"
    a = ck.tensor(fn, "a_q", a, np.uint8, None)
    if a.ndim < 1:
        raise ValueError(f"{fn}: a_q must have at least one dimension")
    if b is not None:
        b = ck.tensor(fn, "b_q", b, np.uint8, None)
        if b.shape != a.shape:
            raise ValueError(f"{fn}: b_q has shape {b.shape}, a_q {a.shape}: they must be equal")
    if a.size == 0:
        return np.zeros(a.shape, np.uint8)
    if b is not None:
        b = b.reshape(-1, a.shape[-1])
    program = ops if isinstance(ops, Program) else compile_program(ops, a.shape[-1])
    y = ext(isa).float_step(
        a.reshape(-1, a.shape[-1]), b, ck.positive_f32(fn, "a_scale", a_scale),
        ck.zero_point(fn, "a_zp", a_zp), ck.positive_f32(fn, "b_scale", b_scale),
        ck.zero_point(fn, "b_zp", b_zp), program.steps, program.floats, program.doubles,
        ck.positive_f32(fn, "y_scale", y_scale), ck.zero_point(fn, "y_zp", y_zp),
        ck.bits(fn, bits), ck.threads(fn, num_threads),
        *(() if table is None else (ck.tensor(fn, "table", table, np.uint8, 2),)))
    return y.reshape(a.shape)


def float_step_table(a_scale: float, a_zp: int, ops: Sequence[Op], y_scale: float, y_zp: int,
                     columns: int, *, bits: int = 8, isa: str | None = None) -> np.ndarray:
    """The one-input step as a (columns, 256) uint8 table, row f holding column f's output for
    input bytes 0..255, computed by :func:`float_step_q8` itself; (1, 256) when every column
    maps alike."""
    grid = np.ascontiguousarray(np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None],
                                                (256, columns)))
    y = float_step_q8(grid, a_scale, a_zp, compile_program(ops, columns), y_scale, y_zp,
                      bits=bits, num_threads=1, isa=isa)
    return shrink_table(np.ascontiguousarray(y.T))


def scalar_constants(ops: Sequence[Op]) -> bool:
    """Whether every constant of ``ops`` is one value for all columns (a pair table's need)."""
    for name, _, constant in ops:
        if name in FLOAT_OPS and np.size(constant) != 1:
            return False
        if name == "affine_f64" and any(np.size(c) != 1 for c in constant):
            return False
    return True


def float_step_pair_table(a_scale: float, a_zp: int, ops: Sequence[Op], y_scale: float,
                          y_zp: int, b_scale: float, b_zp: int, *, bits: int = 8,
                          isa: str | None = None) -> np.ndarray:
    """The two-input step with scalar constants as a (256, 256) uint8 table, entry [a, b] its
    output for input bytes a and b, computed by :func:`float_step_q8` itself."""
    if not scalar_constants(ops):
        raise ValueError("float_step: a pair table needs scalar constants; this step has "
                         "per-column ones")
    grid = np.arange(256, dtype=np.uint8)
    a = np.ascontiguousarray(np.repeat(grid, 256).reshape(-1, 1))
    b = np.ascontiguousarray(np.tile(grid, 256).reshape(-1, 1))
    y = float_step_q8(a, a_scale, a_zp, compile_program(ops, 1), y_scale, y_zp, b=b,
                      b_scale=b_scale, b_zp=b_zp, bits=bits, num_threads=1, isa=isa)
    return np.ascontiguousarray(y.reshape(256, 256))


def lut2_u8(a: np.ndarray, b: np.ndarray, table: np.ndarray, *, num_threads: int = 2,
            isa: str | None = None) -> np.ndarray:
    """``table[a, b]`` value by value for uint8 ``a`` and ``b`` of one shape (rank >= 1)."""
    fn = "lut2_u8"
    if np.ndim(a) < 1:
        raise ValueError(f"{fn}: a_q must have at least one dimension")
    a = ck.tensor(fn, "a_q", a, np.uint8, None)
    b = ck.tensor(fn, "b_q", b, np.uint8, None)
    if b.shape != a.shape:
        raise ValueError(f"{fn}: b_q has shape {b.shape}, a_q {a.shape}: they must be equal")
    table = ck.tensor(fn, "table", table, np.uint8, 2)
    if table.shape != (256, 256):
        raise ValueError(f"{fn}: table must be (256, 256), got {table.shape}")
    if a.size == 0:
        return np.zeros(a.shape, np.uint8)
    y = ext(isa).lut2_u8(a.reshape(-1, a.shape[-1]), b.reshape(-1, a.shape[-1]), table,
                         ck.threads(fn, num_threads))
    return y.reshape(a.shape)


def shrink_table(table: np.ndarray) -> np.ndarray:
    """``table`` as one row when all its rows are equal (a shared table stays in L1)."""
    return table[:1].copy() if (table == table[:1]).all() else table


def compose_tables(first: np.ndarray, then: np.ndarray) -> np.ndarray:
    """The table of ``then`` applied after ``first`` (each (1, 256) or (F, 256))."""
    rows = max(len(first), len(then))
    first = np.broadcast_to(first, (rows, 256))
    then = np.broadcast_to(then, (rows, 256))
    return shrink_table(np.ascontiguousarray(np.take_along_axis(then, first.astype(np.intp),
                                                                axis=1)))


def lut_u8(x: np.ndarray, table: np.ndarray, *, num_threads: int = 2,
           isa: str | None = None) -> np.ndarray:
    """uint8 ``x`` of rank >= 1 mapped byte by byte: ``table[0][x]`` for a (1, 256) table,
    ``table[f][x[..., f]]`` for an (F, 256) one."""
    fn = "lut_u8"
    if np.ndim(x) < 1:
        raise ValueError(f"{fn}: x_q must have at least one dimension")
    x = ck.tensor(fn, "x_q", x, np.uint8, None)
    table = ck.tensor(fn, "table", table, np.uint8, 2)
    if x.size == 0:
        return np.zeros(x.shape, np.uint8)
    y = ext(isa).lut_u8(x.reshape(-1, x.shape[-1]), table, ck.threads(fn, num_threads))
    return y.reshape(x.shape)
