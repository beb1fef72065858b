"""A numpy model of onnxruntime's ``MatMulInteger`` CPU kernels, saturation included.

On AVX2, and on AVX-512 without VNNI, onnxruntime (MLAS) multiplies uint8 activations by int8
weights with VPMADDUBSW: the products of each pair of adjacent ``k`` are added in a signed
16-bit lane that saturates, before the pairs are summed in int32; zero points are corrected
afterwards from row and column sums (exact). Its uint8 x uint8 kernels widen both operands to
16 bits first and are exact, as is the VNNI kernel. :func:`matmul_integer_saturating` computes
the former bit for bit, so a test on a VNNI machine (exact in hardware) still catches a model
that only an AVX2 machine would get wrong.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1


def matmul_integer_exact(a: np.ndarray, b: np.ndarray, a_zp: int | np.ndarray = 0,
                         b_zp: int | np.ndarray = 0) -> np.ndarray:
    """int32 ``(a - a_zp) @ (b - b_zp)`` (ONNX MatMulInteger semantics, exact)."""
    centred_a = a.astype(np.int64) - np.asarray(a_zp, np.int64)
    centred_b = b.astype(np.int64) - np.asarray(b_zp, np.int64)
    return (centred_a @ centred_b).astype(np.int32)


def matmul_integer_saturating(a: np.ndarray, b: np.ndarray, a_zp: int | np.ndarray = 0,
                              b_zp: int | np.ndarray = 0) -> np.ndarray:
    """What an AVX2 onnxruntime computes: exact for uint8 ``b``; for int8 ``b`` the raw
    products of adjacent ``k`` pairs saturate to int16 before the int32 sum."""
    if b.dtype == np.uint8:
        return matmul_integer_exact(a, b, a_zp, b_zp)
    k = a.shape[-1]
    raw_a, raw_b = a.astype(np.int64), b.astype(np.int64)
    if k % 2:
        raw_a = np.concatenate([raw_a, np.zeros((*raw_a.shape[:-1], 1), np.int64)], axis=-1)
        raw_b = np.concatenate([raw_b, np.zeros((1, raw_b.shape[1]), np.int64)], axis=0)
    even = raw_a[..., 0::2, None] * raw_b[0::2]
    odd = raw_a[..., 1::2, None] * raw_b[1::2]
    pairs = np.clip(even + odd, INT16_MIN, INT16_MAX)
    total = pairs.sum(axis=-2)
    a_zp64, b_zp64 = np.asarray(a_zp, np.int64), np.asarray(b_zp, np.int64)
    total = (total - a_zp64 * b.astype(np.int64).sum(axis=0)
             - b_zp64 * a.astype(np.int64).sum(axis=-1, keepdims=True) + k * a_zp64 * b_zp64)
    return total.astype(np.int32)


class MatMulInteger(OpRun):
    """``onnx.reference`` override: ``ReferenceEvaluator(model, new_ops=[MatMulInteger])``
    evaluates a model as an AVX2 onnxruntime would."""

    op_domain = ""

    def _run(self, a, b, a_zero_point=None, b_zero_point=None):  # type: ignore[override]
        a_zp = 0 if a_zero_point is None else a_zero_point
        b_zp = 0 if b_zero_point is None else b_zero_point
        return (matmul_integer_saturating(a, b, a_zp, b_zp),)


def avx2_evaluator(model: onnx.ModelProto, new_ops: list[type[OpRun]]) -> ReferenceEvaluator:
    """``onnx.reference`` evaluation of ``model`` with :class:`MatMulInteger` in place of the
    exact op. The exporter stores scalar constants as one-element vectors, which onnxruntime
    takes everywhere but the reference ``CumSum`` refuses as an axis; a copy gets rank-0 axes."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "CumSum" and node.input[1] in inits:
            axis = numpy_helper.to_array(inits[node.input[1]]).reshape(())
            name = f"{node.input[1]}/rank0"
            if name not in inits:
                inits[name] = numpy_helper.from_array(axis, name)
                graph.initializer.append(inits[name])
            node.input[1] = name
    return ReferenceEvaluator(model, new_ops=[*new_ops, MatMulInteger])
