"""qgnn.exporter."""
