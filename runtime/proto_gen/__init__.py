"""Generated gRPC stubs; regenerate with python proto/generate.py, never edit by hand."""
