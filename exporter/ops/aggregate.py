"""``ai.qgnn::Aggregate``: float neighbour aggregation over destination-sorted CSR edges.

Inputs
  0 ``x``       float32 (N_src, F)  source rows
  1 ``indptr``  int64 (D + 1,)      CSR over destinations: the in-edges of destination v are
                                    edges indptr[v] .. indptr[v + 1] - 1; indptr[0] = 0,
                                    non-decreasing, indptr[D] = E
  2 ``src``     int64 (E,)          source row of each edge, in [0, N_src)
  3 ``w``       float32 (E,)        optional edge weights
Attribute ``reduce``: "sum" (default) | "mean" | "max".
Output ``y`` float32 (D, F):
  msg_e = x[src_e] (* w_e)
  sum:  y[v] = sum of msg_e over v's edges
  mean: y[v] = sum / max(deg_v, 1)
  max:  y[v] = max of msg_e over v's edges
each the exact value rounded once to float32 (max: exact; sums: up to summation-order rounding,
the function body accumulating exact products in float64). A destination with no edge gets 0.
"""

from __future__ import annotations

import numpy as np
from onnx import FunctionProto, TensorProto
from onnx.reference.op_run import OpRun
from qgnn.contract.ops import OP_INPUTS, OP_OPTIONAL
from qgnn.exporter.ops.body import (
    Body,
    Csr,
    Variant,
    gather_rows,
    make_function,
    pad_front,
    segment_max,
    segment_sum,
)
from qgnn.exporter.ops.domain import QGNN_DOMAIN
from qgnn.exporter.ops.numeric import check_array, check_csr, check_reduce, edge_dst

NAME = "Aggregate"
INPUTS = OP_INPUTS[NAME]
OPTIONAL = OP_OPTIONAL[NAME]
ATTRIBUTES: dict[str, object] = {"reduce": "sum"}  # name -> default


def aggregate(x: np.ndarray, indptr: np.ndarray, src: np.ndarray, w: np.ndarray | None = None,
              reduce: str = "sum") -> np.ndarray:
    """Reference semantics of ``Aggregate``: (D, F) float32."""
    check_reduce(NAME, reduce)
    x = check_array(NAME, "x", x, np.float32, 2)
    indptr, src = check_csr(NAME, indptr, src, x.shape[0])
    msg = x[src].astype(np.float64)
    if w is not None:
        w = check_array(NAME, "w", w, np.float32, 1)
        if w.size != src.size:
            raise ValueError(f"{NAME}: w has {w.size} entries, expected one per edge ({src.size})")
        msg = msg * w[:, None]  # exact: a float32 x float32 product fits float64
    return reduce_segments(msg, indptr, reduce)


def reduce_segments(msg: np.ndarray, indptr: np.ndarray, reduce: str) -> np.ndarray:
    """(D, F) float32 reduction of float64 messages (E, F) per destination, rounded once at
    the end (rounding is monotone, so max commutes with it); 0 where no edge.
    """
    num_dst, dst = indptr.size - 1, edge_dst(indptr)
    deg = np.diff(indptr)
    if reduce == "max":
        out = np.full((num_dst, msg.shape[1]), -np.inf, dtype=np.float64)
        np.maximum.at(out, dst, msg)
        out[deg == 0] = 0.0
        return out.astype(np.float32)
    total = np.zeros((num_dst, msg.shape[1]), dtype=np.float64)
    np.add.at(total, dst, msg.astype(np.float64))
    if reduce == "mean":
        total /= np.maximum(deg, 1)[:, None]
    return total.astype(np.float32)


def build_function(variant: Variant) -> FunctionProto:
    """Sum/mean: Gather float64 rows (x cast once, N x F) -> (Mul w, an exact product) -> CumSum
    differences -> (Div deg) -> Cast. Max: Gather float32 -> (Mul w) -> segmented max scan.
    """
    b = Body()
    csr = Csr(b, "indptr")
    dtype = TensorProto.FLOAT if variant.reduce == "max" else TensorProto.DOUBLE
    msg = gather_rows(b, b.op("Cast", "x", to=dtype), "src")  # (E + 1, F)
    if variant.weighted:
        w = b.op("Unsqueeze", pad_front(b, "w", 1), b.const([1], np.int64))  # (E + 1, 1)
        msg = b.op("Mul", msg, b.op("Cast", w, to=dtype))
    if variant.reduce == "max":
        top = segment_max(b, msg, csr, TensorProto.FLOAT)
        out = b.op("Where", csr.has_edges(), top, b.const(0.0, np.float32))
    else:
        total = segment_sum(b, msg, csr)
        if variant.reduce == "mean":
            total = b.op("Div", total, csr.deg_column(TensorProto.DOUBLE))
        out = b.op("Cast", total, to=TensorProto.FLOAT)
    b.rename_output(out, "y")
    return make_function(NAME, variant, INPUTS, ("y",), b, ATTRIBUTES)


class Aggregate(OpRun):
    """Numpy reference of ``ai.qgnn::Aggregate`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, x, indptr, src, w=None, reduce="sum"):  # type: ignore[override]
        return (aggregate(x, indptr, src, w, reduce=reduce),)
