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
                  isa: str | None = None) -> np.ndarray:
    """uint8 ``a`` (and ``b``, same shape) of any rank >= 1 -> uint8 of that shape; constants
    apply per column of the last axis."""
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
        ck.bits(fn, bits), ck.threads(fn, num_threads))
    return y.reshape(a.shape)
