"""qgnn.training.tasks."""
