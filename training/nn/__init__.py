"""qgnn.training.nn."""
