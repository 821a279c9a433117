"""The blocking client: one channel, the stubs on it, messages in and out unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

import grpc

from api.etcdserverpb import rpc_pb2 as pb
from api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from client.common import CHANNEL_OPTIONS, parse_endpoint, prefix_end


class Client:
    """Blocking etcd v3 client for one endpoint. Timeouts are per call, in seconds."""

    def __init__(self, endpoint: str, *, timeout_s: float | None = 10.0) -> None:
        self.target = parse_endpoint(endpoint)
        self.timeout_s = timeout_s
        self.channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self.kv = pb_grpc.KVStub(self.channel)
        self.watch_stub = pb_grpc.WatchStub(self.channel)
        self.lease = pb_grpc.LeaseStub(self.channel)
        self.maintenance = pb_grpc.MaintenanceStub(self.channel)

    def put(self, key: bytes, value: bytes, *, lease: int = 0) -> pb.PutResponse:
        req = pb.PutRequest(key=key, value=value, lease=lease)
        return self.kv.Put(req, timeout=self.timeout_s)

    def range(self, req: pb.RangeRequest) -> pb.RangeResponse:
        return self.kv.Range(req, timeout=self.timeout_s)

    def get(
        self, key: bytes, *, prefix: bool = False, revision: int = 0, serializable: bool = False
    ) -> pb.RangeResponse:
        end = prefix_end(key) if prefix else b""
        req = pb.RangeRequest(key=key, range_end=end, revision=revision, serializable=serializable)
        return self.range(req)

    def delete(self, key: bytes, *, prefix: bool = False) -> pb.DeleteRangeResponse:
        end = prefix_end(key) if prefix else b""
        return self.kv.DeleteRange(
            pb.DeleteRangeRequest(key=key, range_end=end), timeout=self.timeout_s
        )

    def txn(self, req: pb.TxnRequest) -> pb.TxnResponse:
        return self.kv.Txn(req, timeout=self.timeout_s)

    def status(self) -> pb.StatusResponse:
        return self.maintenance.Status(pb.StatusRequest(), timeout=self.timeout_s)

    def lease_grant(self, ttl_s: int) -> pb.LeaseGrantResponse:
        return self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl_s), timeout=self.timeout_s)

    def watch(self, requests: Iterator[pb.WatchRequest]) -> Iterator[pb.WatchResponse]:
        """The raw bidirectional stream: yields every WatchResponse; no timeout."""
        return self.watch_stub.Watch(requests)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
