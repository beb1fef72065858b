"""Stubs of the qgnn.v1 serving API (proto/qgnn/v1/qgnn.proto)."""
