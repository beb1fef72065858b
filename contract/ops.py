"""The ``ai.qgnn`` opset's signatures: each op's formal inputs, in order, and which of them form
its optional group (present all together or not at all; docs/onnx-ops.md).

The exporter's op modules (numpy references, function bodies) and the engine's kernel nodes
both read them from here, so a node is parsed the same way where it is written and where it
runs.
"""

from __future__ import annotations

QGNN_DOMAIN = "ai.qgnn"

_Q_IN = ("x_q", "x_scale", "x_zero_point")
_Q_OUT = ("y_scale", "y_zero_point")
_EDGE_W = ("w_q", "w_scale", "w_zero_point")
_MSG = ("m_scale", "m_zero_point")

# op -> formal inputs, in order
OP_INPUTS: dict[str, tuple[str, ...]] = {
    "Aggregate": ("x", "indptr", "src", "w"),
    "AggregatePadded": ("x", "nbr", "w"),
    "QAggregate": (*_Q_IN, "indptr", "src", *_EDGE_W, *_Q_OUT),
    "QAggregatePadded": (*_Q_IN, "nbr", *_EDGE_W, *_Q_OUT),
    "QMessageAggregate": (*_Q_IN, "indptr", "src", *_EDGE_W, *_MSG, *_Q_OUT),
    "QGCNAggregate": (*_Q_IN, "indptr", "src", "inv_sqrt_degree", "w_scale", "w_zero_point",
                      *_MSG, *_Q_OUT),
    "EdgeSoftmax": ("logits", "indptr"),
    "QEdgeSoftmax": ("logits_q", "indptr", "table"),
    "EdgeDst": ("indptr",),
    "LoopedIndptr": ("indptr", "src"),
    "LoopedSrc": ("indptr", "src"),
}

# op -> its optional input group ("" for each absent one in a node)
OP_OPTIONAL: dict[str, tuple[str, ...]] = {
    "Aggregate": ("w",),
    "AggregatePadded": ("w",),
    "QAggregate": _EDGE_W,
    "QAggregatePadded": _EDGE_W,
    "QMessageAggregate": (),
    "QGCNAggregate": _MSG,
    "EdgeSoftmax": (),
    "QEdgeSoftmax": (),
    "EdgeDst": (),
    "LoopedIndptr": (),
    "LoopedSrc": (),
}
