"""Version pins of the exported files: the ``ai.qgnn`` domain and the standard opset it builds on.

IR 10 is the oldest IR with function overloads (one body per attribute variant); opset 21 has
every op the bodies use. onnx 1.23 would write IR 14 by default, hence the explicit pin; stock
onnxruntime 1.32 runs these files.
"""

from qgnn.contract.ops import QGNN_DOMAIN  # noqa: F401  (re-exported: the exporter's pins)

QGNN_OPSET_VERSION = 1
ONNX_OPSET_VERSION = 21
IR_VERSION = 10
