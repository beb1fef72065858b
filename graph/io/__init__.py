"""qgnn.graph.io."""
