"""``ai.qgnn::QMessageAggregate``: edge scaling into a message site, then aggregation, fused.

The contract's rules 3 and 4 in one op, so a kernel never materialises the (E, F) messages
(GCN's and GAT's ``h[src] * w`` would otherwise be an E x F int32 tensor, then an E x F uint8
one, before ``QAggregate`` sums them).

Inputs (all required)
  0 ``x_q``           uint8 (N_src, F)     source rows, quantised (s_x, zp_x)
  1 ``x_scale``       float32 scalar > 0
  2 ``x_zero_point``  uint8 scalar
  3 ``indptr``        int64 (D + 1,)       CSR over destinations (see Aggregate)
  4 ``src``           int64 (E,)           source row of each edge
  5 ``w_q``           uint8 (E,) or (E, H) edge weights (s_w, zp_w); with H heads, F % H == 0
                                           and column f uses head f // (F / H)
  6 ``w_scale``       float32 scalar > 0
  7 ``w_zero_point``  uint8 scalar
  8 ``m_scale``       float32 scalar > 0   the message site (s_m, zp_m)
  9 ``m_zero_point``  uint8 scalar
 10 ``y_scale``       float32 scalar > 0
 11 ``y_zero_point``  uint8 scalar
Attributes ``reduce``: "sum" (default) | "mean" | "max"; ``bits`` (1..8, default 8): output
range [0, 2^bits - 1]; ``msg_bits`` (1..8, default 8): message range [0, 2^msg_bits - 1].
Output ``y_q`` uint8 (D, F):
  p[e, f]   = (x_q[src_e, f] - zp_x) * (w_q[e, h(f)] - zp_w)                  exact int32
  M_m       = float32(float32(s_x * s_w) / s_m)
  q_m[e, f] = clamp(round_half_even(float32(float32(p) * M_m)) + zp_m, 0, 2^msg_bits - 1)
  c[e, f]   = q_m - zp_m
  then QAggregate of the messages q_m (site s_m, zp_m) with the same reduce and bits:
  sum/mean: acc[v] = sum of c over v's edges;  max: acc[v] = max of c (0 with no edge)
  M_y = float32(s_m / s_y); M_v = M_y (sum, max) or float32(M_y / float32(max(deg_v, 1)))
  y_q[v] = clamp(round_half_even(float32(float32(acc[v]) * M_v)) + zp_y, 0, 2^bits - 1)
So the result equals rule 3 into a uint8 ``msg`` tensor followed by ``QAggregate(msg, ...,
src = 0 .. E - 1)`` bit for bit. |c| <= 255, so the int32 accumulator is exact up to in-degree
8,421,504 (the reference raises beyond int32).
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
)
from qgnn.exporter.ops.q_aggregate import centred_segments, integer_segments

NAME = "QMessageAggregate"
INPUTS = OP_INPUTS[NAME]
OPTIONAL = OP_OPTIONAL[NAME]
ATTRIBUTES: dict[str, object] = {"reduce": "sum", "bits": 8, "msg_bits": 8}  # name -> default


def q_message_aggregate(x_q: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray,
                        indptr: np.ndarray, src: np.ndarray, w_q: np.ndarray,
                        w_scale: np.ndarray, w_zero_point: np.ndarray, m_scale: np.ndarray,
                        m_zero_point: np.ndarray, y_scale: np.ndarray,
                        y_zero_point: np.ndarray, reduce: str = "sum", bits: int = 8,
                        msg_bits: int = 8) -> np.ndarray:
    """Reference semantics of ``QMessageAggregate``: (D, F) uint8."""
    check_reduce(NAME, reduce)
    bits, msg_bits = check_bits(NAME, bits), check_bits(NAME, msg_bits, "msg_bits")
    x_q = check_array(NAME, "x_q", x_q, np.uint8, 2)
    indptr, src = check_csr(NAME, indptr, src, x_q.shape[0])
    w_q = check_edge_weights(w_q, src.size, x_q.shape[1])
    s_x, zp_x = (check_scale(NAME, "x_scale", x_scale),
                 check_zero_point(NAME, "x_zero_point", x_zero_point))
    s_w, zp_w = (check_scale(NAME, "w_scale", w_scale),
                 check_zero_point(NAME, "w_zero_point", w_zero_point))
    s_m, zp_m = (check_scale(NAME, "m_scale", m_scale),
                 check_zero_point(NAME, "m_zero_point", m_zero_point))
    s_y, zp_y = (check_scale(NAME, "y_scale", y_scale),
                 check_zero_point(NAME, "y_zero_point", y_zero_point))
    edges, features = src.size, x_q.shape[1]
    heads = w_q.shape[1]
    centred_w = w_q.astype(np.int64) - zp_w  # (E, H)
    centred_x = (x_q[src].astype(np.int64) - zp_x).reshape(edges, heads, features // heads)
    products = (centred_x * centred_w[:, :, None]).reshape(edges, features)
    with np.errstate(over="ignore"):
        msg_mult, mult = multiplier(s_x, s_m, s_w), multiplier(s_m, s_y, None)
    if not (np.isfinite(msg_mult) and np.isfinite(mult)):
        raise ValueError(f"{NAME}: a requantisation multiplier overflows float32 "
                         f"(s_x * s_w / s_m = {msg_mult}, s_m / s_y = {mult})")
    messages = requantise_np(products, msg_mult, zp_m, msg_bits)
    acc = integer_segments(messages.astype(np.int64) - zp_m, indptr, reduce)
    check_accumulator(NAME, acc)
    if reduce == "mean":
        mult = mean_multiplier(mult, np.diff(indptr))
    return requantise_np(acc, mult, zp_y, bits)


def check_edge_weights(w_q: object, num_edges: int, features: int) -> np.ndarray:
    """``w_q`` as (E, H) uint8: one weight per edge (E,) or per edge and head (E, H), with the
    H heads splitting the F columns evenly."""
    rank = w_q.ndim if isinstance(w_q, np.ndarray) and w_q.ndim in (1, 2) else 1
    w_q = check_array(NAME, "w_q", w_q, np.uint8, rank)
    if w_q.shape[0] != num_edges:
        raise ValueError(f"{NAME}: w_q has {w_q.shape[0]} rows, expected one per edge "
                         f"({num_edges})")
    w_q = w_q[:, None] if rank == 1 else w_q
    heads = w_q.shape[1]
    if heads == 0 or features % heads:
        raise ValueError(f"{NAME}: w_q has {heads} heads, which must divide the {features} "
                         f"columns of x_q (F % H == 0, H >= 1)")
    return w_q


def build_function(variant: Variant) -> FunctionProto:
    """Materialises the messages (E + 1, F) behind one dummy row, as rule 3 would (the portable
    path may; kernels do not), then aggregates them as unweighted ``QAggregate`` does. One body
    serves both weight layouts: ``w_q`` is reshaped to (E, H) with H = 1 for (E,)."""
    b = Body()
    csr = Csr(b, "indptr")
    i64 = np.int64
    gathered = gather_rows(b, "x_q", "src")  # (E + 1, F) uint8, row 0 = zeros
    rows_shape = b.op("Shape", gathered)  # [E + 1, F]
    heads = b.op("Slice", b.op("Concat", b.op("Shape", "w_q"), b.const([1], i64), axis=0),
                 b.const([1], i64), b.const([2], i64))  # [H] ([1] for (E,) weights)
    per_head = b.op("Div", b.op("Slice", rows_shape, b.const([1], i64), b.const([2], i64)),
                    heads)  # [F / H]
    weights = b.op("Reshape", "w_q", b.op("Concat", b.op("Shape", "src"), heads, axis=0),
                   allowzero=1)  # (E, H)
    w_centred = b.op("Sub", b.op("Cast", pad_front(b, weights, 2), to=TensorProto.INT32),
                     b.op("Cast", "w_zero_point", to=TensorProto.INT32))  # (E + 1, H)
    x_centred = b.op("Sub", b.op("Cast", gathered, to=TensorProto.INT32),
                     b.op("Cast", "x_zero_point", to=TensorProto.INT32))  # (E + 1, F)
    cube_shape = b.op("Concat", b.op("Slice", rows_shape, b.const([0], i64), b.const([1], i64)),
                      heads, per_head, axis=0)
    cube = b.op("Reshape", x_centred, cube_shape, allowzero=1)  # (E + 1, H, F / H)
    products = b.op("Reshape", b.op("Mul", cube, b.op("Unsqueeze", w_centred, b.const(
        [2], i64))), rows_shape, allowzero=1)  # (E + 1, F) int32
    msg_multiplier = b.op("Div", b.op("Mul", "x_scale", "w_scale"), "m_scale")
    msg_bits = b.attribute("msg_bits", AttributeProto.INT)
    messages = requantise(b, products, msg_multiplier, "m_zero_point", msg_bits)
    zp_m = b.op("Cast", "m_zero_point", to=TensorProto.INT64)
    acc = centred_segments(b, csr, messages, zp_m, variant.reduce or "sum")
    scale = b.op("Div", "m_scale", "y_scale")
    if variant.reduce == "mean":
        scale = b.op("Div", scale, csr.deg_column(TensorProto.FLOAT))
    bits = b.attribute("bits", AttributeProto.INT)
    b.rename_output(requantise(b, acc, scale, "y_zero_point", bits), "y_q")
    return make_function(NAME, variant, INPUTS, ("y_q",), b, ATTRIBUTES)


class QMessageAggregate(OpRun):
    """Numpy reference of ``ai.qgnn::QMessageAggregate`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, x_q, x_scale, x_zero_point, indptr, src, w_q, w_scale,  # type: ignore[override]
             w_zero_point, m_scale, m_zero_point, y_scale, y_zero_point, reduce="sum", bits=8,
             msg_bits=8):
        return (q_message_aggregate(x_q, x_scale, x_zero_point, indptr, src, w_q, w_scale,
                                    w_zero_point, m_scale, m_zero_point, y_scale, y_zero_point,
                                    reduce=reduce, bits=bits, msg_bits=msg_bits),)
