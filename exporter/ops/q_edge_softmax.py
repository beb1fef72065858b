"""``ai.qgnn::QEdgeSoftmax``: GAT's softmax of quantised edge logits over each destination's
in-edges, exact by construction (qgnn.contract.softmax).

Why an op: the per-destination max and sum are segmented reductions (see EdgeSoftmax), and the
contract's integer form needs no ``exp`` at run time, so every runtime gives the same bits.

Inputs
  0 ``logits_q``  uint8 (E, H)   quantised logits, each below len(table); edges sorted by
                                 destination
  1 ``indptr``    int64 (D + 1,) CSR over destinations (see Aggregate), indptr[D] = E; at most
                                 2^23 - 1 edges per destination
  2 ``table``     int64 (2^bits,) ``T[d] = round(2^30 exp(-d s))`` of the logits' scale ``s``
                                 (qgnn.contract.softmax_table): T[0] = 2^30, non-increasing, >= 0
Output ``alpha`` float32 (E, H):
  t[e, h] = T[m[v, h] - logits_q[e, h]] with v the destination of e and m[v, h] the max of
  logits_q over v's edges; alpha[e, h] = float32(float64(t[e, h]) / float64(sum over v's edges
  e' of t[e', h])). Destinations with no edge contribute no rows.
"""

from __future__ import annotations

import numpy as np
from onnx import FunctionProto, TensorProto
from onnx.reference.op_run import OpRun
from qgnn.contract.ops import OP_INPUTS, OP_OPTIONAL
from qgnn.contract.softmax import edge_softmax_q
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

NAME = "QEdgeSoftmax"
INPUTS = OP_INPUTS[NAME]
OPTIONAL = OP_OPTIONAL[NAME]
ATTRIBUTES: dict[str, object] = {}  # name -> default


def q_edge_softmax(logits_q: np.ndarray, indptr: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Reference semantics of ``QEdgeSoftmax``: (E, H) float32."""
    logits_q = check_array(NAME, "logits_q", logits_q, np.uint8, 2)
    indptr = check_indptr(NAME, indptr, logits_q.shape[0], "len(logits_q)")
    table = check_array(NAME, "table", table, np.int64, 1)
    return edge_softmax_q(logits_q, edge_dst(indptr), indptr.size - 1, table, NAME)


def build_function(variant: Variant) -> FunctionProto:
    """Integer segmented max scan, table Gather, int64 CumSum sums, float64 divide, float32."""
    b = Body()
    csr = Csr(b, "indptr")
    q = b.op("Cast", "logits_q", to=TensorProto.INT32)  # (E, H); half int64's bytes to scan
    top = segment_max(b, pad_front(b, q, 2), csr, TensorProto.INT32)  # (D, H)
    gap = b.op("Sub", b.op("Gather", top, csr.dst, axis=0), q)  # (E, H) in [0, 2^bits)
    weight = b.op("Gather", "table", gap, axis=0)  # (E, H) int64
    total = segment_sum(b, pad_front(b, weight, 2), csr)  # (D, H) int64, exact
    per_edge = b.op("Gather", b.op("Cast", total, to=TensorProto.DOUBLE), csr.dst, axis=0)
    ratio = b.op("Div", b.op("Cast", weight, to=TensorProto.DOUBLE), per_edge)
    b.rename_output(b.op("Cast", ratio, to=TensorProto.FLOAT), "alpha")
    return make_function(NAME, variant, INPUTS, ("alpha",), b, ATTRIBUTES)


class QEdgeSoftmax(OpRun):
    """Numpy reference of ``ai.qgnn::QEdgeSoftmax`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, logits_q, indptr, table):  # type: ignore[override]
        return (q_edge_softmax(logits_q, indptr, table),)
