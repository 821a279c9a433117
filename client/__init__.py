"""The Python client of the etcd v3 API: a thin wrapper of the generated gRPC stubs.

Theory of operation: `Client` (blocking) and `AsyncClient` (grpc.aio) each hold one channel
and the stubs of the services on it; their methods take and return the protobuf messages of
`api.etcdserverpb.rpc_pb2` unchanged. For load generation, `AsyncClient.raw(path)` gives a
bytes-in, bytes-out call that skips protobuf entirely, and `client.wire` builds request bytes
by hand (a put request is two length-prefixed fields), so the hot path costs one gRPC call.
"""

from client.aio import AsyncClient
from client.common import CHANNEL_OPTIONS, ClientError, parse_endpoints
from client.sync import Client

__all__ = ["AsyncClient", "CHANNEL_OPTIONS", "Client", "ClientError", "parse_endpoints"]
