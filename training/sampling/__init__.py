"""qgnn.training.sampling."""
