"""qgnn.bench."""
