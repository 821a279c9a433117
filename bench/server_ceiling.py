"""The ceiling: a do-nothing KV server, to compare the real node's throughput with.

`python -m bench.server_ceiling PORT [--wire]` serves etcdserverpb.KV on 127.0.0.1:PORT; Put and
Range answer at once with a header and nothing else. By default on grpc.aio (the issue's
ceiling); with --wire on petra's own transport (server/wire/), which petra serves on. Drive it
(and then petra) with the same load, e.g. etcd's Go benchmark: `benchmark --endpoints
127.0.0.1:PORT --clients 64 --conns 64 put --total 20000`. The ratio petra/ceiling is what the
server core's overhead costs.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from server.wire.server import Server


class NullKV(rpc_pb2_grpc.KVServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.revision = 1

    async def Put(self, request: Any, context: Any) -> Any:
        self.revision += 1
        return rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=self.revision))

    async def Range(self, request: Any, context: Any) -> Any:
        return rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(revision=self.revision))


async def serve(port: int, wire: bool = False) -> None:
    server = Server() if wire else grpc.aio.server()
    rpc_pb2_grpc.add_KVServicer_to_server(NullKV(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"ceiling server ({'wire' if wire else 'grpc.aio'}) on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), "--wire" in sys.argv[2:]))
