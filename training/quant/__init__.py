"""qgnn.training.quant."""
