"""A deliberately broken etcd for petra-bench's crash tests: a grpc.aio KV + Watch server
that keeps everything in memory, so kill -9 loses every acknowledged write and the revision
starts again from 1. `python -m tests.bench_fake_etcd PORT`.

Only what the crash mode uses: Put, Txn of puts, Range (prefix, revision, min_mod_revision)
and Watch (one watcher per stream, from a start revision).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from api.etcdserverpb import rpc_pb2 as pb
from api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from api.mvccpb import kv_pb2


class Store:
    """History as a list of (revision, key, value), appended in revision order."""

    def __init__(self) -> None:
        self.revision = 1
        self.events: list[tuple[int, bytes, bytes]] = []
        self.changed = asyncio.Event()

    def put(self, pairs: list[tuple[bytes, bytes]]) -> int:
        self.revision += 1
        self.events += [(self.revision, k, v) for k, v in pairs]
        self.changed.set()
        self.changed = asyncio.Event()
        return self.revision

    def state(self, revision: int) -> dict[bytes, tuple[bytes, int]]:
        out: dict[bytes, tuple[bytes, int]] = {}
        for rev, k, v in self.events:
            if rev > revision:
                break
            out[k] = (v, rev)
        return out

    def header(self) -> pb.ResponseHeader:
        return pb.ResponseHeader(revision=self.revision)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    return key == start if not end else start <= key < end


class KV(pb_grpc.KVServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def Put(self, request: pb.PutRequest, context: Any) -> pb.PutResponse:  # noqa: N802
        self.store.put([(request.key, request.value)])
        return pb.PutResponse(header=self.store.header())

    async def Txn(self, request: pb.TxnRequest, context: Any) -> pb.TxnResponse:  # noqa: N802
        pairs = [(op.request_put.key, op.request_put.value) for op in request.success]
        self.store.put(pairs)
        ops = [pb.ResponseOp(response_put=pb.PutResponse()) for _ in pairs]
        return pb.TxnResponse(header=self.store.header(), succeeded=True, responses=ops)

    async def Range(self, request: pb.RangeRequest, context: Any) -> pb.RangeResponse:  # noqa: N802
        revision = request.revision or self.store.revision
        kvs = [
            kv_pb2.KeyValue(key=k, value=v, mod_revision=rev)
            for k, (v, rev) in sorted(self.store.state(revision).items())
            if in_range(k, request.key, request.range_end) and rev >= request.min_mod_revision
        ]
        return pb.RangeResponse(header=self.store.header(), kvs=kvs, count=len(kvs))


class Watch(pb_grpc.WatchServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def Watch(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.WatchRequest], context: Any
    ) -> AsyncIterator[pb.WatchResponse]:
        create = (await request_iterator.__anext__()).create_request
        yield pb.WatchResponse(header=self.store.header(), watch_id=0, created=True)
        start = create.start_revision or self.store.revision + 1
        i = 0
        while True:
            changed = self.store.changed
            events = self.store.events
            batch = []
            while i < len(events):
                rev, k, v = events[i]
                i += 1
                if rev >= start and in_range(k, create.key, create.range_end):
                    kv = kv_pb2.KeyValue(key=k, value=v, mod_revision=rev)
                    batch.append(kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv))
            if batch:
                yield pb.WatchResponse(header=self.store.header(), watch_id=0, events=batch)
            await changed.wait()


async def serve(port: int) -> None:
    store = Store()
    server = aio.server()
    pb_grpc.add_KVServicer_to_server(KV(store), server)
    pb_grpc.add_WatchServicer_to_server(Watch(store), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
