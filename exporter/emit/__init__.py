"""ONNX emission of the GNN stack: one module per layer type plus the stack around them."""
