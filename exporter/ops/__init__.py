"""The ``ai.qgnn`` ONNX operator set: message-passing ops with numpy references and portable bodies.

Each op is a custom node in domain ``ai.qgnn`` (so a fast runtime can run it with its own kernel)
that also ships as a model-local ONNX function built from standard ops only (so stock
onnxruntime runs the exported file with no plugin). See docs/onnx-ops.md.
"""

from qgnn.exporter.ops.domain import IR_VERSION, ONNX_OPSET_VERSION, QGNN_DOMAIN, QGNN_OPSET_VERSION
from qgnn.exporter.ops.model import function_protos, make_op_model, make_op_node, opset_imports
from qgnn.exporter.ops.registry import OPS, OpSpec, reference_ops

__all__ = [
    "IR_VERSION",
    "ONNX_OPSET_VERSION",
    "OPS",
    "QGNN_DOMAIN",
    "QGNN_OPSET_VERSION",
    "OpSpec",
    "function_protos",
    "make_op_model",
    "make_op_node",
    "opset_imports",
    "reference_ops",
]
