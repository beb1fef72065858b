"""``ai.qgnn::QGCNAggregate``: symmetric-normalised sum over A + I, coefficients built in place.

GCN (and EGC's ``symnorm`` aggregator) sum over the layer's edges plus one self-loop per
destination, each weighted by ``(d_u + 1)^-1/2 (d_v + 1)^-1/2`` quantised to an edge-weight site.
Exported as standard ops that is a self-looped CSR (Range/Concat/ScatterElements over E + N
int64), two Gathers, a Mul and a QuantizeLinear per looped edge before the aggregation: about
half of an INT8 GCN forward on a 1 M-edge graph. This op takes the edges as stored and the
per-node ``inv_sqrt_degree`` and does all of that per edge, inside the kernel.

Inputs ("" for the absent optional message site 8-9)
  0 ``x_q``              uint8 (N_src, F)      source rows (s_x, zp_x)
  1 ``x_scale``          float32 scalar > 0
  2 ``x_zero_point``     uint8 scalar
  3 ``indptr``           int64 (D + 1,)        CSR over destinations, WITHOUT the added loops
  4 ``src``              int64 (E,)            source row of each edge (stored self-loops stay
                                               ordinary edges); D <= N_src
  5 ``inv_sqrt_degree``  float32 (N_inv,)      finite; entry i belongs to source row i, N_inv
                                               >= N_src (a longer vector's tail is unused)
  6 ``w_scale``          float32 scalar > 0    the edge-weight site (s_w, zp_w)
  7 ``w_zero_point``     uint8 scalar
  8 ``m_scale``          float32 scalar > 0    optional, with 9: the message site (s_m, zp_m)
  9 ``m_zero_point``     uint8 scalar
 10 ``y_scale``          float32 scalar > 0
 11 ``y_zero_point``     uint8 scalar
Attributes ``bits`` (output range [0, 2^bits - 1]), ``w_bits`` (edge weights), ``msg_bits``
(messages; read only with the message site), each 1..8, default 8.
Output ``y_q`` uint8 (D, F). For destination v, over its in-edges u -> v and then the loop
v -> v (so a stored loop counts twice, as training's ``with_self_loops(drop_existing=False)``):
  coef  = float32(inv[u] * inv[v])
  q_w   = clamp(round_half_even(float32(coef / s_w)) + zp_w, 0, 2^w_bits - 1)   (QuantizeLinear)
  with the message site: exactly ``QMessageAggregate`` (reduce "sum") of those weights:
    c   = clamp(rint(float32(float32((x_q[u] - zp_x) (q_w - zp_w)) * M_m)) + zp_m, 0,
                2^msg_bits - 1) - zp_m,  M_m = float32(float32(s_x * s_w) / s_m);
    acc = sum of c,  M = float32(s_m / s_y)
  without: exactly weighted ``QAggregate`` (reduce "sum"):
    acc = sum of (x_q[u] - zp_x) (q_w - zp_w),  M = float32(float32(s_x * s_w) / s_y)
  y_q[v] = clamp(round_half_even(float32(float32(acc) * M)) + zp_y, 0, 2^bits - 1)
Every destination has its loop, so none is empty. int32: exact up to in-degree 8,421,503 with
the message site, 33,024 without (the loop is one more term); the reference raises beyond.
"""

from __future__ import annotations

import numpy as np
from onnx import AttributeProto, FunctionProto, TensorProto
from onnx.reference.op_run import OpRun
from qgnn.contract.ops import OP_INPUTS, OP_OPTIONAL
from qgnn.exporter.ops.body import (
    Body,
    Csr,
    Variant,
    gather_rows,
    make_function,
    pad_front,
    requantise,
    segment_sum,
)
from qgnn.exporter.ops.domain import QGNN_DOMAIN
from qgnn.exporter.ops.numeric import (
    check_array,
    check_bits,
    check_csr,
    check_scale,
    check_zero_point,
    edge_dst,
)
from qgnn.exporter.ops.q_aggregate import q_aggregate
from qgnn.exporter.ops.q_message_aggregate import q_message_aggregate

NAME = "QGCNAggregate"
INPUTS = OP_INPUTS[NAME]
OPTIONAL = OP_OPTIONAL[NAME]
OPTIONAL_TAG = "message"  # overload "message" with the message site, "" without
ATTRIBUTES: dict[str, object] = {"bits": 8, "w_bits": 8, "msg_bits": 8}  # name -> default


def self_looped(indptr: np.ndarray, src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, src) with one loop v -> v appended as the last in-edge of every destination
    (the exporter's ``Csr.with_self_loops(drop_existing=False)``)."""
    num_dst = indptr.size - 1
    loops = np.arange(num_dst, dtype=np.int64)
    looped_src = np.empty(src.size + num_dst, np.int64)
    looped_src[np.arange(src.size) + edge_dst(indptr)] = src
    looped_src[indptr[1:] + loops] = loops
    return indptr + np.arange(num_dst + 1, dtype=np.int64), looped_src


def gcn_weights(inv: np.ndarray, src: np.ndarray, dst: np.ndarray, w_scale: np.float32,
                w_zero_point: int, w_bits: int) -> np.ndarray:
    """uint8 q_w per edge: ``QuantizeLinear(inv[src] * inv[dst], s_w, zp_w)`` clipped to
    [0, 2^w_bits - 1]; float32 product, float32 division (not a reciprocal multiply)."""
    with np.errstate(over="ignore"):
        coef = np.multiply(inv[src], inv[dst], dtype=np.float32)
        scaled = np.divide(coef, w_scale, dtype=np.float32)
    rounded = np.clip(np.rint(scaled), -512.0, 512.0).astype(np.int64)
    return np.clip(rounded + w_zero_point, 0, (1 << w_bits) - 1).astype(np.uint8)


def q_gcn_aggregate(x_q: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray,
                    indptr: np.ndarray, src: np.ndarray, inv_sqrt_degree: np.ndarray,
                    w_scale: np.ndarray, w_zero_point: np.ndarray, m_scale: np.ndarray | None,
                    m_zero_point: np.ndarray | None, y_scale: np.ndarray,
                    y_zero_point: np.ndarray, bits: int = 8, w_bits: int = 8,
                    msg_bits: int = 8) -> np.ndarray:
    """Reference semantics of ``QGCNAggregate``: (D, F) uint8."""
    bits, w_bits = check_bits(NAME, bits), check_bits(NAME, w_bits, "w_bits")
    msg_bits = check_bits(NAME, msg_bits, "msg_bits")
    x_q = check_array(NAME, "x_q", x_q, np.uint8, 2)
    indptr, src = check_csr(NAME, indptr, src, x_q.shape[0])
    num_src, num_dst = x_q.shape[0], indptr.size - 1
    if num_dst > num_src:
        raise ValueError(f"{NAME}: {num_dst} destinations but only {num_src} source rows; the "
                         f"destinations are the first D sources (D <= N_src)")
    inv = check_array(NAME, "inv_sqrt_degree", inv_sqrt_degree, np.float32, 1)
    if inv.size < num_src:
        raise ValueError(f"{NAME}: inv_sqrt_degree has {inv.size} entries, expected one per "
                         f"source row ({num_src})")
    if not np.isfinite(inv[:num_src]).all():
        bad = int(np.flatnonzero(~np.isfinite(inv[:num_src]))[0])
        raise ValueError(f"{NAME}: inv_sqrt_degree[{bad}] = {inv[bad]} is not finite")
    s_w = check_scale(NAME, "w_scale", w_scale)
    zp_w = check_zero_point(NAME, "w_zero_point", w_zero_point)
    if (m_scale is None) != (m_zero_point is None):
        raise ValueError(f"{NAME}: m_scale and m_zero_point come together")
    looped_indptr, looped_src = self_looped(indptr, src)
    w_q = gcn_weights(inv, looped_src, edge_dst(looped_indptr), s_w, zp_w, w_bits)
    w_zp = np.asarray(zp_w, np.uint8)
    if m_scale is None:
        return q_aggregate(x_q, x_scale, x_zero_point, looped_indptr, looped_src, w_q, w_scale,
                           w_zp, y_scale, y_zero_point, reduce="sum", bits=bits)
    return q_message_aggregate(x_q, x_scale, x_zero_point, looped_indptr, looped_src, w_q,
                               w_scale, w_zp, m_scale, m_zero_point, y_scale, y_zero_point,
                               reduce="sum", bits=bits, msg_bits=msg_bits)


def build_function(variant: Variant) -> FunctionProto:
    """The stored edges and the loops as two separate terms: integer sums are exact in any
    order, so ``acc[v] = segment sum over the stored edges + the loop term of row v`` needs no
    looped CSR (no scatter); the weights are the export's Mul + QuantizeLinear + Clip."""
    b = Body()
    csr = Csr(b, "indptr")
    i64 = np.int64
    num_dst = b.op("Squeeze", b.op("Sub", b.op("Shape", "indptr"), b.const([1], i64)))
    loops = b.op("Range", b.const(0, i64), num_dst, b.const(1, i64))  # (D,)
    inv_dst = b.op("Gather", "inv_sqrt_degree", csr.dst, axis=0)
    edge_w = _quantise_weight(b, b.op("Mul", b.op("Gather", "inv_sqrt_degree", "src", axis=0),
                                      inv_dst))  # (E,)
    loop_inv = b.op("Gather", "inv_sqrt_degree", loops, axis=0)
    loop_w = _quantise_weight(b, b.op("Mul", loop_inv, loop_inv))  # (D,)
    edge_rows = gather_rows(b, "x_q", "src")  # (E + 1, F), row 0 = zeros
    loop_rows = b.op("Gather", "x_q", loops, axis=0)  # (D, F)
    if variant.weighted:
        msg_mult = b.op("Div", b.op("Mul", "x_scale", "w_scale"), "m_scale")
        zp_m = b.op("Cast", "m_zero_point", to=TensorProto.INT64)
        terms = [b.op("Sub", b.op("Cast", _messages(b, rows, w, msg_mult), to=TensorProto.INT64),
                      zp_m) for rows, w in ((edge_rows, pad_front(b, edge_w, 1)),
                                            (loop_rows, loop_w))]
        scale = b.op("Div", "m_scale", "y_scale")
    else:
        terms = [_products(b, rows, w, TensorProto.INT64)
                 for rows, w in ((edge_rows, pad_front(b, edge_w, 1)), (loop_rows, loop_w))]
        scale = b.op("Div", b.op("Mul", "x_scale", "w_scale"), "y_scale")
    acc = b.op("Add", segment_sum(b, terms[0], csr), terms[1])  # (D, F) int64
    bits = b.attribute("bits", AttributeProto.INT)
    b.rename_output(requantise(b, acc, scale, "y_zero_point", bits), "y_q")
    return make_function(NAME, variant, INPUTS, ("y_q",), b, ATTRIBUTES)


def _quantise_weight(b: Body, coef: str) -> str:
    """uint8 ``QuantizeLinear(coef, w_scale, w_zero_point)`` clipped to [0, 2^w_bits - 1]."""
    q = b.op("QuantizeLinear", coef, "w_scale", "w_zero_point")
    w_bits = b.op("Cast", b.attribute("w_bits", AttributeProto.INT), to=TensorProto.FLOAT)
    qmax = b.op("Sub", b.op("Pow", b.const(2.0, np.float32), w_bits), b.const(1.0, np.float32))
    return b.op("Clip", q, b.const(0, np.uint8), b.op("Cast", qmax, to=TensorProto.UINT8))


def _products(b: Body, rows: str, w: str, to: int) -> str:
    """(R, F) ``(rows - zp_x) * (w - zp_w)`` of type ``to`` for uint8 rows and weights (R,)."""
    x_centred = b.op("Sub", b.op("Cast", rows, to=to), b.op("Cast", "x_zero_point", to=to))
    w_centred = b.op("Sub", b.op("Cast", w, to=to), b.op("Cast", "w_zero_point", to=to))
    return b.op("Mul", x_centred, b.op("Unsqueeze", w_centred, b.const([1], np.int64)))


def _messages(b: Body, rows: str, w: str, msg_mult: str) -> str:
    """uint8 (R, F) messages at the message site: rule 3 on the int32 products."""
    msg_bits = b.attribute("msg_bits", AttributeProto.INT)
    return requantise(b, _products(b, rows, w, TensorProto.INT32), msg_mult, "m_zero_point",
                      msg_bits)


class QGCNAggregate(OpRun):
    """Numpy reference of ``ai.qgnn::QGCNAggregate`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, x_q, x_scale, x_zero_point, indptr, src, inv_sqrt_degree,  # type: ignore[override]
             w_scale, w_zero_point, m_scale=None, m_zero_point=None, y_scale=None,
             y_zero_point=None, bits=8, w_bits=8, msg_bits=8):
        return (q_gcn_aggregate(x_q, x_scale, x_zero_point, indptr, src, inv_sqrt_degree,
                                w_scale, w_zero_point, m_scale, m_zero_point, y_scale,
                                y_zero_point, bits=bits, w_bits=w_bits, msg_bits=msg_bits),)
