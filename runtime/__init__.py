"""qgnn.runtime."""
