"""``ai.qgnn::QAggregatePadded``: quantised aggregation over a padded fixed-fanout block.

Inputs ("" for the absent optional edge-weight group 4-6)
  0 ``x_q``           uint8 (N_src, F)
  1 ``x_scale``       float32 scalar > 0
  2 ``x_zero_point``  uint8 scalar
  3 ``nbr``           int64 (D, K)   source rows in [0, N_src), or -1 = padding
  4 ``w_q``           uint8 (D, K)   optional quantised edge weights aligned with ``nbr``
  5 ``w_scale``       float32 scalar > 0 (with w_q)
  6 ``w_zero_point``  uint8 scalar       (with w_q)
  7 ``y_scale``       float32 scalar > 0
  8 ``y_zero_point``  uint8 scalar
Attributes ``reduce`` ("sum" | "mean" | "max", default "sum") and ``bits`` (1..8, default 8).
Output ``y_q`` uint8 (D, F): exactly QAggregate's semantics (accumulation, int32 limit,
requantisation) over the non-padding slots of each row. K <= 33,025 keeps every valid input
inside int32; the body reduces in int64 anyway.
"""

from __future__ import annotations

import numpy as np
from onnx import AttributeProto, FunctionProto, TensorProto
from onnx.reference.op_run import OpRun
from qgnn.contract.ops import OP_INPUTS, OP_OPTIONAL
from qgnn.exporter.ops.body import Body, Fanout, Variant, make_function, pad_front, requantise
from qgnn.exporter.ops.domain import QGNN_DOMAIN
from qgnn.exporter.ops.numeric import check_array
from qgnn.exporter.ops.padding import check_fanout, fanout_to_csr
from qgnn.exporter.ops.q_aggregate import q_aggregate

NAME = "QAggregatePadded"
INPUTS = OP_INPUTS[NAME]
OPTIONAL = OP_OPTIONAL[NAME]
ATTRIBUTES: dict[str, object] = {"reduce": "sum", "bits": 8}  # name -> default


def q_aggregate_padded(x_q: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray,
                       nbr: np.ndarray, w_q: np.ndarray | None, w_scale: np.ndarray | None,
                       w_zero_point: np.ndarray | None, y_scale: np.ndarray,
                       y_zero_point: np.ndarray, reduce: str = "sum",
                       bits: int = 8) -> np.ndarray:
    """Reference semantics of ``QAggregatePadded``: QAggregate on the equivalent CSR."""
    x_q = check_array(NAME, "x_q", x_q, np.uint8, 2)
    nbr = check_fanout(NAME, nbr, x_q.shape[0])
    indptr, src, slots = fanout_to_csr(nbr)
    if w_q is not None:
        w_q = check_array(NAME, "w_q", w_q, np.uint8, 2)
        if w_q.shape != nbr.shape:
            raise ValueError(f"{NAME}: w_q has shape {w_q.shape}, expected nbr's {nbr.shape}")
        w_q = w_q.reshape(-1)[slots]
    return q_aggregate(x_q, x_scale, x_zero_point, indptr, src, w_q, w_scale, w_zero_point,
                       y_scale, y_zero_point, reduce=reduce, bits=bits)


def build_function(variant: Variant) -> FunctionProto:
    """Gather from x_q with a zero row prepended (padding -> row 0, which adds nothing to
    sum(x)), reduce over K in int64, correct by the zero points, requantise.
    """
    b = Body()
    fan = Fanout(b, "nbr")
    gathered = b.op("Gather", pad_front(b, "x_q", 2), fan.rows, axis=0)  # (D, K, F) uint8
    zp_x = b.op("Cast", "x_zero_point", to=TensorProto.INT64)
    axis = b.const([1], np.int64)
    if variant.weighted:
        scale = b.op("Div", b.op("Mul", "x_scale", "w_scale"), "y_scale")
        w_centred = b.op("Where", fan.mask, b.op("Sub", b.op("Cast", "w_q", to=TensorProto.INT64),
                         b.op("Cast", "w_zero_point", to=TensorProto.INT64)),
                         b.const(0, np.int64))  # (D, K), 0 at padding
        w_cube = b.op("Unsqueeze", w_centred, b.const([2], np.int64))  # (D, K, 1)
    else:
        scale = b.op("Div", "x_scale", "y_scale")
    if variant.reduce == "max":
        if variant.weighted:
            centred = b.op("Sub", b.op("Cast", gathered, to=TensorProto.INT32),
                           b.op("Cast", zp_x, to=TensorProto.INT32))
            msg = b.op("Mul", centred, b.op("Cast", w_cube, to=TensorProto.INT32))
            msg = b.op("Where", fan.mask3(), msg, b.const(np.iinfo(np.int32).min, np.int32))
            top = b.op("ReduceMax", msg, axis, keepdims=0)
        else:  # raw bytes: the zero padding row never exceeds a real neighbour
            top = b.op("Sub", b.op("Cast", b.op("ReduceMax", gathered, axis, keepdims=0),
                                   to=TensorProto.INT32), b.op("Cast", zp_x, to=TensorProto.INT32))
        acc = b.op("Where", fan.has_edges(), top, b.const(0, np.int32))
    else:
        raw = b.op("Cast", gathered, to=TensorProto.INT64)
        if variant.weighted:
            raw = b.op("Mul", raw, w_cube)
            correction = b.op("Mul", b.op("ReduceSum", w_centred, axis, keepdims=1), zp_x)
        else:
            correction = b.op("Mul", b.op("Unsqueeze", fan.deg, axis), zp_x)
        acc = b.op("Sub", b.op("ReduceSum", raw, axis, keepdims=0), correction)
        if variant.reduce == "mean":
            scale = b.op("Div", scale, fan.deg_column(TensorProto.FLOAT))
    bits = b.attribute("bits", AttributeProto.INT)
    b.rename_output(requantise(b, acc, scale, "y_zero_point", bits), "y_q")
    return make_function(NAME, variant, INPUTS, ("y_q",), b, ATTRIBUTES)


class QAggregatePadded(OpRun):
    """Numpy reference of ``ai.qgnn::QAggregatePadded`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, x_q, x_scale, x_zero_point, nbr, w_q=None, w_scale=None,  # type: ignore[override]
             w_zero_point=None, y_scale=None, y_zero_point=None, reduce="sum", bits=8):
        return (q_aggregate_padded(x_q, x_scale, x_zero_point, nbr, w_q, w_scale, w_zero_point,
                                   y_scale, y_zero_point, reduce=reduce, bits=bits),)
