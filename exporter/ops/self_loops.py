"""``ai.qgnn::LoopedIndptr`` and ``ai.qgnn::LoopedSrc``: a CSR over destinations with one
self-loop appended as the last in-edge of every destination.

Why ops: GAT, GCN and EGC symnorm build this for every layer, and in standard ONNX it takes a
mask, a CumSum, two Compress and two ScatterElements over E + D int64 (most of the first
onnxruntime segment of a GAT on a large graph). A runtime kernel is one pass over the edges.
Two ops, because a kernel node has exactly one output; the looped ``dst`` stays
``EdgeDst(LoopedIndptr)``.

Inputs ``indptr`` int64 (D + 1,) (indptr[0] = 0, non-decreasing, indptr[D] = E) and ``src``
int64 (E,) with entries >= 0; destination v is also source id v (destinations are the first D
sources). Attribute ``drop_existing`` (0 or 1): first remove the stored edges u -> v with u == v.
Per destination v the output holds v's kept in-edges in their stored order, then v -> v.
``LoopedIndptr`` is int64 (D + 1,), ``LoopedSrc`` int64 (E' + D,), E' the kept edges.
"""

from __future__ import annotations

import numpy as np
from onnx import AttributeProto, FunctionProto, TensorProto
from onnx.numpy_helper import from_array
from onnx.reference.op_run import OpRun
from qgnn.contract.ops import OP_INPUTS
from qgnn.exporter.ops.body import INT64_MAX, Body, Csr, Variant, make_function
from qgnn.exporter.ops.domain import QGNN_DOMAIN
from qgnn.exporter.ops.numeric import check_array, check_indptr, edge_dst

INDPTR_NAME = "LoopedIndptr"
SRC_NAME = "LoopedSrc"
INPUTS = OP_INPUTS[INDPTR_NAME]  # LoopedSrc takes the same
ATTRIBUTES: dict[str, object] = {"drop_existing": 0}  # name -> default


def _checked(op: str, indptr: np.ndarray, src: np.ndarray,
             drop_existing: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (indptr, src, keep): ``keep`` (E,) bool marks the edges that stay."""
    if drop_existing not in (0, 1):
        raise ValueError(f"{op}: attribute drop_existing must be 0 or 1, got {drop_existing!r}")
    src = check_array(op, "src", src, np.int64, 1)
    indptr = check_indptr(op, indptr, src.size)
    if np.any(src < 0):
        bad = int(np.flatnonzero(src < 0)[0])
        raise ValueError(f"{op}: src[{bad}] = {int(src[bad])} is negative (source ids are >= 0)")
    keep = np.ones(src.size, bool)
    if drop_existing:
        keep = src != edge_dst(indptr)
    return indptr, src, keep


def _looped_indptr(indptr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return kept_before[indptr] + np.arange(indptr.size, dtype=np.int64)


def looped_indptr(indptr: np.ndarray, src: np.ndarray, drop_existing: int = 0) -> np.ndarray:
    """Reference semantics of ``LoopedIndptr``: (D + 1,) int64."""
    indptr, _, keep = _checked(INDPTR_NAME, indptr, src, drop_existing)
    return _looped_indptr(indptr, keep)


def looped_src(indptr: np.ndarray, src: np.ndarray, drop_existing: int = 0) -> np.ndarray:
    """Reference semantics of ``LoopedSrc``: (E' + D,) int64."""
    indptr, src, keep = _checked(SRC_NAME, indptr, src, drop_existing)
    new_indptr = _looped_indptr(indptr, keep)
    loop_pos = new_indptr[1:] - 1
    out = np.empty(int(new_indptr[-1]), np.int64)
    is_edge = np.ones(out.size, bool)
    is_edge[loop_pos] = False
    out[is_edge] = src[keep]
    out[loop_pos] = np.arange(loop_pos.size, dtype=np.int64)
    return out


class _Looped:
    """The shared body fragment: kept-edge mask, kept counts and the looped pointer."""

    def __init__(self, b: Body) -> None:
        self.b = b
        csr = Csr(b, "indptr")
        self.dst = csr.dst
        drop = b.op("Cast", b.attribute("drop_existing", AttributeProto.INT), to=TensorProto.BOOL)
        self.keep = b.op("Not", b.op("And", b.op("Equal", "src", self.dst), drop))  # (E,)
        kept_before = b.op("CumSum", b.op("Concat", b.const([0], np.int64), b.op(
            "Cast", self.keep, to=TensorProto.INT64), axis=0), b.const(0, np.int64))  # (E + 1,)
        self.indptr_kept = b.op("Gather", kept_before, "indptr", axis=0)  # (D + 1,)
        self.num_dst_plus_1 = b.op("Squeeze", b.op("Shape", "indptr"))
        shift = b.op("Range", b.const(0, np.int64), self.num_dst_plus_1, b.const(1, np.int64))
        self.indptr = b.op("Add", self.indptr_kept, shift)

    def src(self) -> str:
        """(E' + D,) kept sources scattered to their looped positions, loops after each run."""
        b = self.b
        one = b.const(1, np.int64)
        src = b.op("Compress", "src", self.keep, axis=0)
        dst = b.op("Compress", self.dst, self.keep, axis=0)
        kept = b.op("Shape", src)  # (1,) E'
        loops = b.op("Range", b.const(0, np.int64), b.op("Sub", self.num_dst_plus_1, one), one)
        edge_pos = b.op("Add", b.op("Range", b.const(0, np.int64), b.op("Squeeze", kept), one),
                        dst)
        loop_pos = b.op("Add", b.op("Slice", self.indptr_kept, b.const([1], np.int64),
                                    b.const([INT64_MAX], np.int64)), loops)
        size = b.op("Add", kept, b.op("Shape", loops))
        zeros = b.op("ConstantOfShape", size, value=from_array(np.zeros(1, np.int64)))
        return b.op("ScatterElements", zeros, b.op("Concat", edge_pos, loop_pos, axis=0),
                    b.op("Concat", src, loops, axis=0), axis=0)


def build_indptr_function(variant: Variant) -> FunctionProto:
    b = Body()
    b.rename_output(_Looped(b).indptr, "looped_indptr")
    return make_function(INDPTR_NAME, variant, INPUTS, ("looped_indptr",), b, ATTRIBUTES)


def build_src_function(variant: Variant) -> FunctionProto:
    b = Body()
    b.rename_output(_Looped(b).src(), "looped_src")
    return make_function(SRC_NAME, variant, INPUTS, ("looped_src",), b, ATTRIBUTES)


class LoopedIndptr(OpRun):
    """Numpy reference of ``ai.qgnn::LoopedIndptr`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, indptr, src, drop_existing=0):  # type: ignore[override]
        return (looped_indptr(indptr, src, int(drop_existing)),)


class LoopedSrc(OpRun):
    """Numpy reference of ``ai.qgnn::LoopedSrc`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, indptr, src, drop_existing=0):  # type: ignore[override]
        return (looped_src(indptr, src, int(drop_existing)),)
