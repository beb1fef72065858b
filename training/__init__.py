"""qgnn.training."""
