"""qgnn.graph."""
