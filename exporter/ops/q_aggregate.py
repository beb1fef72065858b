"""``ai.qgnn::QAggregate``: quantised (uint8) neighbour aggregation over destination-sorted CSR.

Inputs ("" for the absent optional edge-weight group 5-7)
  0 ``x_q``           uint8 (N_src, F)  source rows, quantised (s_x, zp_x)
  1 ``x_scale``       float32 scalar > 0
  2 ``x_zero_point``  uint8 scalar
  3 ``indptr``        int64 (D + 1,)    CSR over destinations (see Aggregate)
  4 ``src``           int64 (E,)        source row of each edge
  5 ``w_q``           uint8 (E,)        optional quantised edge weights (s_w, zp_w)
  6 ``w_scale``       float32 scalar > 0 (with w_q)
  7 ``w_zero_point``  uint8 scalar       (with w_q)
  8 ``y_scale``       float32 scalar > 0
  9 ``y_zero_point``  uint8 scalar
Attributes ``reduce``: "sum" (default) | "mean" | "max"; ``bits``: 1..8 (default 8), the
output range [0, 2^bits - 1] (INT4 activations are stored in uint8 with bits=4).
Output ``y_q`` uint8 (D, F), per the quantisation contract:
  m_e = (x_q[src_e] - zp_x) [* (w_q[e] - zp_w)]      exact integers
  sum/mean: acc[v] = sum of m_e over v's edges;  max: acc[v] = max of m_e (0 with no edge)
  M = float32(float32(s_x [* s_w]) / s_y)        (float32 operations, left to right)
  M_v = M (sum, max) or float32(M / float32(max(deg_v, 1))) (mean)
  y_q[v] = clamp(round_half_even(float32(float32(acc[v]) * M_v)) + zp_y, 0, 2^bits - 1)
A destination with no edge gets zp_y. The contract accumulates in int32: inputs whose exact
|acc| exceeds 2^31 - 1 are invalid (the reference raises; guaranteed valid when in-degree <=
8,421,504 unweighted, <= 33,025 weighted). The function body accumulates in int64, whose
prefix sums cannot overflow (|prefix| <= E * 255 * 255 < 2^63), so it yields the exact sum,
hence the int32 accumulator's value on every valid input.
"""

from __future__ import annotations

import numpy as np
from onnx import AttributeProto, FunctionProto, TensorProto
from onnx.reference.op_run import OpRun
from qgnn.contract import mean_multiplier, multiplier
from qgnn.contract import requantise as requantise_np
from qgnn.contract.ops import OP_INPUTS, OP_OPTIONAL
from qgnn.exporter.ops.body import (
    Body,
    Csr,
    Variant,
    gather_rows,
    make_function,
    pad_front,
    requantise,
    segment_max,
    segment_sum,
)
from qgnn.exporter.ops.domain import QGNN_DOMAIN
from qgnn.exporter.ops.numeric import (
    check_accumulator,
    check_array,
    check_bits,
    check_csr,
    check_reduce,
    check_scale,
    check_zero_point,
    edge_dst,
)

NAME = "QAggregate"
INPUTS = OP_INPUTS[NAME]
OPTIONAL = OP_OPTIONAL[NAME]
ATTRIBUTES: dict[str, object] = {"reduce": "sum", "bits": 8}  # name -> default


def q_aggregate(x_q: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray,
                indptr: np.ndarray, src: np.ndarray, w_q: np.ndarray | None,
                w_scale: np.ndarray | None, w_zero_point: np.ndarray | None,
                y_scale: np.ndarray, y_zero_point: np.ndarray, reduce: str = "sum",
                bits: int = 8) -> np.ndarray:
    """Reference semantics of ``QAggregate``: (D, F) uint8."""
    check_reduce(NAME, reduce)
    bits = check_bits(NAME, bits)
    x_q = check_array(NAME, "x_q", x_q, np.uint8, 2)
    indptr, src = check_csr(NAME, indptr, src, x_q.shape[0])
    s_x, zp_x = check_scale(NAME, "x_scale", x_scale), check_zero_point(
        NAME, "x_zero_point", x_zero_point)
    s_y, zp_y = check_scale(NAME, "y_scale", y_scale), check_zero_point(
        NAME, "y_zero_point", y_zero_point)
    msg = x_q[src].astype(np.int64) - zp_x
    s_w = None
    if w_q is not None or w_scale is not None or w_zero_point is not None:
        if w_q is None or w_scale is None or w_zero_point is None:
            raise ValueError(f"{NAME}: w_q, w_scale and w_zero_point come together")
        w_q = check_array(NAME, "w_q", w_q, np.uint8, 1)
        if w_q.size != src.size:
            raise ValueError(f"{NAME}: w_q has {w_q.size} entries, expected one per edge "
                             f"({src.size})")
        s_w = check_scale(NAME, "w_scale", w_scale)
        msg = msg * (w_q.astype(np.int64) - check_zero_point(NAME, "w_zero_point",
                                                             w_zero_point))[:, None]
    acc = integer_segments(msg, indptr, reduce)
    check_accumulator(NAME, acc)
    mult = multiplier(s_x, s_y, s_w)
    if reduce == "mean":
        mult = mean_multiplier(mult, np.diff(indptr))
    return requantise_np(acc, mult, zp_y, bits)


def integer_segments(msg: np.ndarray, indptr: np.ndarray, reduce: str) -> np.ndarray:
    """(D, F) int64 sum (sum, mean) or max (max) of integer messages (E, F); 0 where no edge."""
    num_dst, dst = indptr.size - 1, edge_dst(indptr)
    if reduce == "max":
        out = np.full((num_dst, msg.shape[1]), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(out, dst, msg)
        out[np.diff(indptr) == 0] = 0
        return out
    out = np.zeros((num_dst, msg.shape[1]), dtype=np.int64)
    np.add.at(out, dst, msg)
    return out


def build_function(variant: Variant) -> FunctionProto:
    """Integer body. Sum/mean: sum(x - zp_x) = sum(x) - deg * zp_x (weighted: sum(x (w - zp_w))
    - zp_x sum(w - zp_w)), so the E x F pass casts the raw gathered bytes once and the zero-point
    correction runs on the (D, F) result; exact in int64. Max of the raw bytes commutes with
    subtracting zp_x, so the unweighted max scans uint8.
    """
    b = Body()
    csr = Csr(b, "indptr")
    gathered = gather_rows(b, "x_q", "src")  # (E + 1, F) uint8, row 0 = zeros
    zp_x = b.op("Cast", "x_zero_point", to=TensorProto.INT64)
    w_column = None
    if variant.weighted:
        scale = b.op("Div", b.op("Mul", "x_scale", "w_scale"), "y_scale")
        w_centred = b.op("Sub", b.op("Cast", pad_front(b, "w_q", 1), to=TensorProto.INT64),
                         b.op("Cast", "w_zero_point", to=TensorProto.INT64))
        w_column = b.op("Unsqueeze", w_centred, b.const([1], np.int64))  # (E + 1, 1)
    else:
        scale = b.op("Div", "x_scale", "y_scale")
    if w_column is None:
        acc = centred_segments(b, csr, gathered, zp_x, variant.reduce)
    elif variant.reduce == "max":
        acc = _weighted_max(b, csr, gathered, zp_x, w_column)
    else:
        raw = b.op("Mul", b.op("Cast", gathered, to=TensorProto.INT64), w_column)
        correction = b.op("Mul", segment_sum(b, w_column, csr), zp_x)  # (D, 1)
        acc = b.op("Sub", segment_sum(b, raw, csr), correction)
    if variant.reduce == "mean":
        scale = b.op("Div", scale, csr.deg_column(TensorProto.FLOAT))
    bits = b.attribute("bits", AttributeProto.INT)
    b.rename_output(requantise(b, acc, scale, "y_zero_point", bits), "y_q")
    return make_function(NAME, variant, INPUTS, ("y_q",), b, ATTRIBUTES)


def centred_segments(b: Body, csr: Csr, padded: str, zp: str, reduce: str) -> str:
    """(D, F) sum (sum, mean: int64) or max (max: int32, 0 without edges) of ``padded - zp``
    per destination, ``padded`` being (E + 1, F) uint8 rows behind a dummy row and ``zp`` an
    int64 scalar. sum(q - zp) = sum(q) - deg * zp, so the E x F pass casts the raw bytes once;
    max of the raw bytes commutes with subtracting zp, so the max scans uint8.
    """
    if reduce == "max":
        top = b.op("Cast", segment_max(b, padded, csr, TensorProto.UINT8), to=TensorProto.INT32)
        top = b.op("Sub", top, b.op("Cast", zp, to=TensorProto.INT32))
        return b.op("Where", csr.has_edges(), top, b.const(0, np.int32))
    raw = b.op("Cast", padded, to=TensorProto.INT64)
    correction = b.op("Mul", b.op("Unsqueeze", csr.deg, b.const([1], np.int64)), zp)
    return b.op("Sub", segment_sum(b, raw, csr), correction)


def _weighted_max(b: Body, csr: Csr, gathered: str, zp_x: str, w_column: str) -> str:
    """(D, F) int32 max of the weighted centred messages, 0 where a destination has no edge."""
    centred = b.op("Sub", b.op("Cast", gathered, to=TensorProto.INT32),
                   b.op("Cast", zp_x, to=TensorProto.INT32))
    msg = b.op("Mul", centred, b.op("Cast", w_column, to=TensorProto.INT32))
    top = segment_max(b, msg, csr, TensorProto.INT32)
    return b.op("Where", csr.has_edges(), top, b.const(0, np.int32))


class QAggregate(OpRun):
    """Numpy reference of ``ai.qgnn::QAggregate`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, x_q, x_scale, x_zero_point, indptr, src, w_q=None, w_scale=None,  # type: ignore[override]
             w_zero_point=None, y_scale=None, y_zero_point=None, reduce="sum", bits=8):
        return (q_aggregate(x_q, x_scale, x_zero_point, indptr, src, w_q, w_scale, w_zero_point,
                            y_scale, y_zero_point, reduce=reduce, bits=bits),)
