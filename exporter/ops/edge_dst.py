"""``ai.qgnn::EdgeDst``: the destination of each edge, from the CSR pointer.

Why an op: per-edge destination features (GAT's a_dst . h_v, GCN's d_v^-1/2) are a Gather by
destination, and standard ONNX has no repeat / searchsorted to expand ``indptr`` into one index
per edge. A runtime kernel is np.repeat; the body uses a 1-D ScatterElements add + CumSum.

Input  0 ``indptr`` int64 (D + 1,): CSR over destinations, indptr[0] = 0, non-decreasing.
Output ``dst`` int64 (E,) with E = indptr[D]: dst[e] = v for indptr[v] <= e < indptr[v + 1].
"""

from __future__ import annotations

import numpy as np
from onnx import FunctionProto
from onnx.reference.op_run import OpRun
from qgnn.contract.ops import OP_INPUTS, OP_OPTIONAL
from qgnn.exporter.ops.body import Body, Csr, Variant, make_function
from qgnn.exporter.ops.domain import QGNN_DOMAIN
from qgnn.exporter.ops.numeric import check_indptr
from qgnn.exporter.ops.numeric import edge_dst as repeat_dst

NAME = "EdgeDst"
INPUTS = OP_INPUTS[NAME]
OPTIONAL = OP_OPTIONAL[NAME]
ATTRIBUTES: dict[str, object] = {}  # name -> default


def edge_dst(indptr: np.ndarray) -> np.ndarray:
    """Reference semantics of ``EdgeDst``: (E,) int64."""
    indptr = check_indptr(NAME, indptr)
    return repeat_dst(indptr)


def build_function(variant: Variant) -> FunctionProto:
    b = Body()
    b.rename_output(Csr(b, "indptr").dst, "dst")
    return make_function(NAME, variant, INPUTS, ("dst",), b, ATTRIBUTES)


class EdgeDst(OpRun):
    """Numpy reference of ``ai.qgnn::EdgeDst`` for onnx.reference.ReferenceEvaluator."""

    op_domain = QGNN_DOMAIN

    def _run(self, indptr):  # type: ignore[override]
        return (edge_dst(indptr),)
