"""``ai.qgnn::AggregatePadded``: float aggregation over a padded fixed-fanout neighbour block.

The layout of sampled blocks with a fixed fanout K (GraphSAGE-style): row v of ``nbr`` lists
v's in-neighbours, -1 marking unused slots (anywhere in the row). No CSR and no edge sorting
needed, and the body is one Gather + one reduction over axis 1 (no scan, no Loop).

Inputs
  0 ``x``    float32 (N_src, F)
  1 ``nbr``  int64 (D, K)    source rows in [0, N_src), or -1 = padding
  2 ``w``    float32 (D, K)  optional edge weights, aligned with ``nbr`` (ignored at padding)
Attribute ``reduce``: "sum" (default) | "mean" | "max".
Output ``y`` float32 (D, F): as Aggregate, over the non-padding slots of each row (deg_v = their
count; mean divides by max(deg_v, 1); a row of padding only gives 0).
"""

from __future__ import annotations

import numpy as np
from onnx import FunctionProto, TensorProto
from onnx.reference.op_run import OpRun
from qgnn.contract.ops import OP_INPUTS, OP_OPTIONAL
from qgnn.exporter.ops.aggregate import reduce_segments
from qgnn.exporter.ops.body import Body, Fanout, Variant, make_function, pad_front
from qgnn.exporter.ops.domain import QGNN_DOMAIN
from qgnn.exporter.ops.numeric import check_array, check_reduce
from qgnn.exporter.ops.padding import check_fanout, fanout_to_csr

NAME = "AggregatePadded"
INPUTS = OP_INPUTS[NAME]
OPTIONAL = OP_OPTIONAL[NAME]
ATTRIBUTES: dict[str, object] = {"reduce": "sum"}  # name -> default


def aggregate_padded(x: np.ndarray, nbr: np.ndarray, w: np.ndarray | None = None,
                     reduce: str = "sum") -> np.ndarray:
    """Reference semantics of ``AggregatePadded``: (D, F) float32."""
    check_reduce(NAME, reduce)
    x = check_array(NAME, "x", x, np.float32, 2)
    nbr = check_fanout(NAME, nbr, x.shape[0])
    indptr, src, slots = fanout_to_csr(nbr)
    msg = x[src].astype(np.float64)
    if w is not None:
        w = check_array(NAME, "w", w, np.float32, 2)
        if w.shape != nbr.shape:
            raise ValueError(f"{NAME}: w has shape {w.shape}, expected nbr's {nbr.shape}")
        msg = msg * w.reshape(-1)[slots][:, None]
    return reduce_segments(msg, indptr, reduce)


def build_function(variant: Variant) -> FunctionProto:
    """Gather from x with a zero row prepended (padding -> row 0), mask, reduce over K; sums
    in float64 like Aggregate.
    """
    b = Body()
    fan = Fanout(b, "nbr")
    dtype = TensorProto.FLOAT if variant.reduce == "max" else TensorProto.DOUBLE
    x = pad_front(b, b.op("Cast", "x", to=dtype), 2)
    msg = b.op("Gather", x, fan.rows, axis=0)  # (D, K, F), 0 at padding
    if variant.weighted:
        weights = b.op("Where", fan.mask, "w", b.const(0.0, np.float32))  # padding may be NaN
        weights = b.op("Cast", b.op("Unsqueeze", weights, b.const([2], np.int64)), to=dtype)
        msg = b.op("Mul", msg, weights)
    axis = b.const([1], np.int64)
    if variant.reduce == "max":
        masked = b.op("Where", fan.mask3(), msg, b.const(-np.inf, np.float32))
        top = b.op("ReduceMax", masked, axis, keepdims=0)
        out = b.op("Where", fan.has_edges(), top, b.const(0.0, np.float32))
    else:
        total = b.op("ReduceSum", msg, axis, keepdims=0)
        if variant.reduce == "mean":
            total = b.op("Div", total, fan.deg_column(TensorProto.DOUBLE))
        out = b.op("Cast", total, to=TensorProto.FLOAT)
    b.rename_output(out, "y")
    return make_function(NAME, variant, INPUTS, ("y",), b, ATTRIBUTES)


class AggregatePadded(OpRun):
    """Numpy reference of ``ai.qgnn::AggregatePadded`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, x, nbr, w=None, reduce="sum"):  # type: ignore[override]
        return (aggregate_padded(x, nbr, w, reduce=reduce),)
