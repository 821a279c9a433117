"""Generated from the .proto file beside it; regenerate with python -m api.generate."""
