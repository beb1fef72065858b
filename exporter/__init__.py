"""qgnn.exporter: trained checkpoints -> INT8 (or FP32) ONNX models with the ai.qgnn ops, and
verified model bundles (``qgnn export``; docs/export.md)."""
