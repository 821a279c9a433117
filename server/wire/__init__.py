"""petra's own gRPC-over-HTTP/2 transport for the client port (see server/wire/server.py)."""
