"""The asyncio client (grpc.aio), plus raw bytes-in/bytes-out calls for load generation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from api.etcdserverpb import rpc_pb2 as pb
from api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from client.common import CHANNEL_OPTIONS, parse_endpoint, prefix_end

RawCall = Callable[..., Awaitable[bytes]]


class AsyncClient:
    """grpc.aio etcd v3 client for one endpoint; create it inside the running event loop."""

    def __init__(self, endpoint: str, *, timeout_s: float | None = 10.0) -> None:
        self.target = parse_endpoint(endpoint)
        self.timeout_s = timeout_s
        self.channel = aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self.kv = pb_grpc.KVStub(self.channel)
        self.watch_stub = pb_grpc.WatchStub(self.channel)
        self.lease = pb_grpc.LeaseStub(self.channel)
        self.maintenance = pb_grpc.MaintenanceStub(self.channel)

    def raw(self, path: str) -> RawCall:
        """A unary call on `path` (e.g. '/etcdserverpb.KV/Put') that sends the given bytes as
        the request and returns the response's bytes, undecoded: no protobuf on the hot path."""
        return self.channel.unary_unary(path)  # type: ignore[no-any-return]

    async def wait_ready(self, timeout_s: float) -> None:
        """Waits until the channel is connected; raises asyncio.TimeoutError otherwise."""
        import asyncio

        await asyncio.wait_for(self.channel.channel_ready(), timeout_s)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> pb.PutResponse:
        req = pb.PutRequest(key=key, value=value, lease=lease)
        return await self.kv.Put(req, timeout=self.timeout_s)  # type: ignore[no-any-return]

    async def range(self, req: pb.RangeRequest, **kw: Any) -> pb.RangeResponse:
        kw.setdefault("timeout", self.timeout_s)
        return await self.kv.Range(req, **kw)  # type: ignore[no-any-return]

    async def get(
        self, key: bytes, *, prefix: bool = False, revision: int = 0, serializable: bool = False
    ) -> pb.RangeResponse:
        end = prefix_end(key) if prefix else b""
        req = pb.RangeRequest(key=key, range_end=end, revision=revision, serializable=serializable)
        return await self.range(req)

    async def txn(self, req: pb.TxnRequest) -> pb.TxnResponse:
        return await self.kv.Txn(req, timeout=self.timeout_s)  # type: ignore[no-any-return]

    async def status(self) -> pb.StatusResponse:
        return await self.maintenance.Status(  # type: ignore[no-any-return]
            pb.StatusRequest(), timeout=self.timeout_s
        )

    async def lease_grant(self, ttl_s: int) -> pb.LeaseGrantResponse:
        return await self.lease.LeaseGrant(  # type: ignore[no-any-return]
            pb.LeaseGrantRequest(TTL=ttl_s), timeout=self.timeout_s
        )

    def watch(self) -> Any:
        """A raw bidirectional Watch stream call: `await call.write(req)`, `await call.read()`."""
        return self.watch_stub.Watch()

    def lease_keepalive(self) -> Any:
        """A raw bidirectional LeaseKeepAlive stream call."""
        return self.lease.LeaseKeepAlive()

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def is_unavailable(err: BaseException) -> bool:
    """True for the errors a client sees while a server is down or restarting."""
    if isinstance(err, grpc.RpcError):
        code = err.code()
        return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return False
