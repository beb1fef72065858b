"""``ai.qgnn::EdgeSoftmax``: softmax of edge scores over each destination's in-edges (GAT).

Why an op: the per-destination max and sum are segmented reductions, which standard ONNX can
only express with scatter reductions (wrong or slow in onnxruntime) or the scans used here.

Inputs
  0 ``logits``  float32 (E, H)  one score per edge and head, finite; edges sorted by destination
  1 ``indptr``  int64 (D + 1,)  CSR over destinations (see Aggregate), indptr[D] = E
Output ``alpha`` float32 (E, H):
  alpha[e, h] = exp(logits[e, h] - m[v, h]) / sum over v's edges e' of exp(logits[e', h] - m[v, h])
  with v the destination of e and m[v, h] the max of logits over v's edges. Destinations with no
  edge contribute no rows; each destination's alphas sum to 1 per head.
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
    make_function,
    pad_front,
    segment_max,
    segment_sum,
)
from qgnn.exporter.ops.domain import QGNN_DOMAIN
from qgnn.exporter.ops.numeric import check_array, check_indptr, edge_dst

NAME = "EdgeSoftmax"
INPUTS = OP_INPUTS[NAME]
OPTIONAL = OP_OPTIONAL[NAME]
ATTRIBUTES: dict[str, object] = {}  # name -> default


def edge_softmax(logits: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Reference semantics of ``EdgeSoftmax``: (E, H) float32."""
    logits = check_array(NAME, "logits", logits, np.float32, 2)
    indptr = check_indptr(NAME, indptr, logits.shape[0], "len(logits)")
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"{NAME}: logits must be finite")
    num_dst, dst = indptr.size - 1, edge_dst(indptr)
    top = np.full((num_dst, logits.shape[1]), -np.inf, dtype=np.float32)
    np.maximum.at(top, dst, logits)
    ex = np.exp(logits - top[dst])
    total = np.zeros((num_dst, logits.shape[1]), dtype=np.float64)
    np.add.at(total, dst, ex.astype(np.float64))
    return (ex / total[dst]).astype(np.float32)


def build_function(variant: Variant) -> FunctionProto:
    """Segmented max scan, Gather it back to the edges, Exp, float64 CumSum sums, divide."""
    b = Body()
    csr = Csr(b, "indptr")
    top = segment_max(b, pad_front(b, "logits", 2), csr, TensorProto.FLOAT)  # (D, H)
    ex = b.op("Exp", b.op("Sub", "logits", b.op("Gather", top, csr.dst, axis=0)))  # (E, H)
    total = segment_sum(b, b.op("Cast", pad_front(b, ex, 2), to=TensorProto.DOUBLE), csr)
    per_edge = b.op("Gather", b.op("Cast", total, to=TensorProto.FLOAT), csr.dst, axis=0)
    b.rename_output(b.op("Div", ex, per_edge), "alpha")
    return make_function(NAME, variant, INPUTS, ("alpha",), b, ATTRIBUTES)


class EdgeSoftmax(OpRun):
    """Numpy reference of ``ai.qgnn::EdgeSoftmax`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, logits, indptr):  # type: ignore[override]
        return (edge_softmax(logits, indptr),)
