"""Test doubles for the services' unit tests: an in-memory MVCC store with a pull-based watch
hub, and a node that applies proposals to it on another thread (as the storage thread does).

They follow docs/interfaces.md (engine Store, watch hub) and the Node contract of the server
split, and only as far as the services use them: current-revision reads, the Txn compares and
ops that lock and election send, leases, compaction. Not shipped; not a conftest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from api.etcdserverpb import internal_pb2, rpc_pb2
from api.mvccpb import kv_pb2
from engine import errors as engine_errors
from server.services import build_services, register, start


@dataclass(frozen=True, slots=True)
class Compacted:
    compact_revision: int


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\x00":
        return key >= start
    return start <= key < end


class FakeWatcher:
    def __init__(self, hub, key, range_end, start_revision, prev_kv, filters, notify):
        self.hub, self.key, self.range_end = hub, key, range_end
        self.next_revision = start_revision
        self.prev_kv, self.filters, self.notify = prev_kv, filters, notify
        self.canceled = False

    def take(self, max_events: int) -> list[kv_pb2.Event] | Compacted:
        store = self.hub.store
        with store.lock:
            if self.next_revision < store.compact_revision:
                return Compacted(store.compact_revision)
            out: list[kv_pb2.Event] = []
            for revision in range(max(self.next_revision, 2), store.published_revision + 1):
                matched = [
                    event
                    for event in store.events_at.get(revision, [])
                    if _in_range(event.kv.key, self.key, self.range_end)
                    and event.type not in self.filters
                ]
                if out and len(out) + len(matched) > max_events:
                    break
                for event in matched:
                    copy = kv_pb2.Event()
                    copy.CopyFrom(event)
                    if not self.prev_kv:
                        copy.ClearField("prev_kv")
                    out.append(copy)
                self.next_revision = revision + 1
            return out

    def cancel(self) -> None:
        self.canceled = True
        self.hub.watchers.discard(self)


class FakeHub:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.watchers: set[FakeWatcher] = set()

    def watch(
        self,
        key,
        range_end,
        start_revision,
        *,
        prev_kv=False,
        filters=frozenset(),
        notify: Callable[[], None],
    ):
        watcher = FakeWatcher(self, key, range_end, start_revision, prev_kv, filters, notify)
        self.watchers.add(watcher)
        return watcher

    def publish(self) -> None:
        self.store.published_revision = self.store.revision
        for watcher in list(self.watchers):
            watcher.notify()


@dataclass
class FakeStore:
    revision: int = 1
    # Like the engine, the revision moves first and the hub publishes it a moment later.
    published_revision: int = 1
    _next_revision: int = 2
    compact_revision: int = 0
    consistent_index: int = 0
    kvs: dict[bytes, kv_pb2.KeyValue] = field(default_factory=dict)
    lease_ttls: dict[int, int] = field(default_factory=dict)
    events_at: dict[int, list[kv_pb2.Event]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.watch_hub = FakeHub(self)

    # -- reads -----------------------------------------------------------------------
    def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        with self.lock:
            kvs = [
                kv
                for key, kv in sorted(self.kvs.items())
                if _in_range(key, request.key, request.range_end)
            ]
            count = len(kvs)
            if request.max_create_revision:
                kvs = [kv for kv in kvs if kv.create_revision <= request.max_create_revision]
            if request.sort_target == rpc_pb2.RangeRequest.CREATE:
                kvs.sort(
                    key=lambda kv: kv.create_revision,
                    reverse=request.sort_order == rpc_pb2.RangeRequest.DESCEND,
                )
            more = bool(request.limit) and len(kvs) > request.limit
            if request.limit:
                kvs = kvs[: request.limit]
            return rpc_pb2.RangeResponse(
                header=rpc_pb2.ResponseHeader(revision=self.revision),
                kvs=kvs,
                count=count,
                more=more,
            )

    def leases(self) -> list[tuple[int, int]]:
        with self.lock:
            return list(self.lease_ttls.items())

    def lease_ttl_info(self, lease_id: int) -> tuple[int, list[bytes]]:
        with self.lock:
            if lease_id not in self.lease_ttls:
                raise engine_errors.LeaseNotFoundError()
            keys = [key for key, kv in self.kvs.items() if kv.lease == lease_id]
            return self.lease_ttls[lease_id], keys

    # -- writes (one revision per call that changes something) ----------------------------
    def apply(self, request: internal_pb2.InternalRequest) -> Any:
        with self.lock:
            self.consistent_index += 1
            self._next_revision = self.revision + 1
            saved_kvs, saved_leases = dict(self.kvs), dict(self.lease_ttls)
            changes: list[kv_pb2.Event] = []
            try:
                response = self._apply(request, changes)
            except Exception:
                self.kvs, self.lease_ttls = saved_kvs, saved_leases  # an op changes nothing
                raise
            if changes:
                self.revision += 1
                self.events_at[self.revision] = changes
            response.header.revision = self.revision
        self.watch_hub.publish()
        return response

    def _apply(self, request: internal_pb2.InternalRequest, changes: list) -> Any:
        if request.HasField("put"):
            return self._put(request.put, changes)
        if request.HasField("delete_range"):
            return self._delete(request.delete_range, changes)
        if request.HasField("txn"):
            return self._txn(request.txn, changes)
        if request.HasField("lease_grant"):
            grant = request.lease_grant
            if grant.ID in self.lease_ttls:
                raise engine_errors.LeaseExistsError()
            self.lease_ttls[grant.ID] = grant.TTL
            return rpc_pb2.LeaseGrantResponse(ID=grant.ID, TTL=grant.TTL)
        if request.HasField("lease_revoke"):
            return self._revoke(request.lease_revoke.ID, changes)
        if request.HasField("compaction"):
            return self._compact(request.compaction.revision)
        raise AssertionError(f"unexpected proposal {request}")

    def _put(self, put: rpc_pb2.PutRequest, changes: list) -> rpc_pb2.PutResponse:
        if put.lease and put.lease not in self.lease_ttls:
            raise engine_errors.LeaseNotFoundError()
        old = self.kvs.get(put.key)
        kv = kv_pb2.KeyValue(
            key=put.key,
            value=put.value,
            lease=put.lease,
            version=old.version + 1 if old else 1,
            create_revision=old.create_revision if old else self._next_revision,
            mod_revision=self._next_revision,
        )
        self.kvs[put.key] = kv
        changes.append(kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv, prev_kv=old))
        return rpc_pb2.PutResponse()

    def _delete(self, delete: rpc_pb2.DeleteRangeRequest, changes: list):
        keys = [key for key in sorted(self.kvs) if _in_range(key, delete.key, delete.range_end)]
        for key in keys:
            old = self.kvs.pop(key)
            deleted = kv_pb2.KeyValue(key=key, mod_revision=self._next_revision)
            changes.append(kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=deleted, prev_kv=old))
        return rpc_pb2.DeleteRangeResponse(deleted=len(keys))

    def _compare(self, compare: rpc_pb2.Compare) -> bool:
        kv = self.kvs.get(compare.key)
        target = compare.WhichOneof("target_union")
        if compare.target == rpc_pb2.Compare.VALUE:
            if kv is None:
                return False
            left, right = kv.value, compare.value
        else:
            field_name = {
                "version": "version",
                "create_revision": "create_revision",
                "mod_revision": "mod_revision",
                "lease": "lease",
            }[target]
            left = getattr(kv, field_name) if kv is not None else 0
            right = getattr(compare, target)
        result = compare.result
        if result == rpc_pb2.Compare.EQUAL:
            return left == right
        if result == rpc_pb2.Compare.NOT_EQUAL:
            return left != right
        if result == rpc_pb2.Compare.GREATER:
            return left > right
        return left < right

    def _txn(self, txn: rpc_pb2.TxnRequest, changes: list) -> rpc_pb2.TxnResponse:
        succeeded = all(self._compare(compare) for compare in txn.compare)
        response = rpc_pb2.TxnResponse(succeeded=succeeded)
        for op in txn.success if succeeded else txn.failure:
            kind = op.WhichOneof("request")
            if kind == "request_range":
                response.responses.add(response_range=self.range(op.request_range))
            elif kind == "request_put":
                response.responses.add(response_put=self._put(op.request_put, changes))
            elif kind == "request_delete_range":
                deleted = self._delete(op.request_delete_range, changes)
                response.responses.add(response_delete_range=deleted)
            else:
                raise AssertionError(kind)
        return response

    def _revoke(self, lease_id: int, changes: list) -> rpc_pb2.LeaseRevokeResponse:
        if lease_id not in self.lease_ttls:
            raise engine_errors.LeaseNotFoundError()
        del self.lease_ttls[lease_id]
        for key in sorted(key for key, kv in self.kvs.items() if kv.lease == lease_id):
            self._delete(rpc_pb2.DeleteRangeRequest(key=key), changes)
        return rpc_pb2.LeaseRevokeResponse()

    def _compact(self, revision: int) -> rpc_pb2.CompactionResponse:
        if revision <= self.compact_revision:
            raise engine_errors.CompactedError()
        if revision > self.revision:
            raise engine_errors.FutureRevisionError()
        self.compact_revision = revision
        return rpc_pb2.CompactionResponse()


@dataclass(frozen=True)
class FakeConfig:
    election_timeout_ms: int = 1000
    max_request_bytes: int = 1_572_864
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"


class FakeNode:
    """The Node contract over FakeStore: proposals apply on a worker thread, like the
    storage thread, so the hub's notify really comes from another thread."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.store = FakeStore()
        self.config = config or FakeConfig()
        self.cluster_id, self.member_id = 0x1000, 0x2002
        self.is_leader, self.term, self.leader_id = True, 2, 0x2002
        self.proposals: list[internal_pb2.InternalRequest] = []
        self._callbacks: list[Callable[[bool], None]] = []
        self.fail_proposals: Exception | None = None
        self.quota_checks: list[Any] = []

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            raft_term=self.term,
            revision=self.store.revision if revision is None else revision,
        )

    async def propose(self, request: internal_pb2.InternalRequest) -> Any:
        self.proposals.append(request)
        if self.fail_proposals is not None:
            raise self.fail_proposals
        response = await asyncio.to_thread(self.store.apply, request)
        revision = response.header.revision
        response.header.CopyFrom(self.header(revision))
        return response

    async def check_quota(self, request: Any) -> None:
        self.quota_checks.append(request)

    async def read_barrier(self) -> None:
        await asyncio.sleep(0)

    def on_leader_change(self, callback: Callable[[bool], None]) -> None:
        self._callbacks.append(callback)

    def set_leader(self, is_leader: bool) -> None:
        self.is_leader = is_leader
        self.leader_id = self.member_id if is_leader else 0x3003
        for callback in self._callbacks:
            callback(is_leader)


class FakeClock:
    def __init__(self, now_s: float = 1000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Waits until predicate() holds, yielding to the loop; fails after timeout_s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.005)


def async_test(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Runs an async test function on a fresh event loop, with a deadline."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), TEST_DEADLINE_S))

    return wrapper


TEST_DEADLINE_S = 30.0


@contextlib.asynccontextmanager
async def serving(
    node: FakeNode, *, clock: Callable[[], float] | None = None, progress_interval_s: float = 600
) -> AsyncIterator[tuple[Any, grpc.aio.Channel]]:
    """The services on an in-process gRPC server on a free loopback port, and a channel to it.
    The timed loops do not run: tests drive the lessor and compactor themselves."""
    services = build_services(
        node, clock=clock or FakeClock(), watch_progress_notify_interval_s=progress_interval_s
    )
    server = grpc.aio.server()
    register(server, services)
    start(node, services, loops=False)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield services, channel
    finally:
        await channel.close()
        await server.stop(None)
        await services.stop()


class StoreNode(FakeNode):
    """The Node contract over the real engine Store: proposals apply in write batches on one
    worker thread, as on the storage thread, so the real watch hub (ring, replay from LMDB,
    compaction) is what the services meet."""

    def __init__(self, path: str, config: FakeConfig | None = None) -> None:
        super().__init__(config)
        from engine import Store

        self.store = Store.open(path, quota_bytes=-1)  # type: ignore[assignment]
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def _apply(self, request: internal_pb2.InternalRequest) -> tuple[Any, int]:
        """On the writer thread: the response and the revision right after its batch (later
        proposals may already have moved the store on by the time the loop reads it)."""
        response = self._apply_batch(request)
        return response, self.store.revision

    def _apply_batch(self, request: internal_pb2.InternalRequest) -> Any:
        with self.store.write_batch(sync=False) as batch:
            if request.HasField("put"):
                return batch.put(request.put)
            if request.HasField("delete_range"):
                return batch.delete_range(request.delete_range)
            if request.HasField("txn"):
                return batch.txn(request.txn)
            if request.HasField("compaction"):
                batch.compact(request.compaction.revision)
                return rpc_pb2.CompactionResponse()
            if request.HasField("lease_grant"):
                grant = request.lease_grant
                batch.lease_grant(grant.ID, grant.TTL)
                return rpc_pb2.LeaseGrantResponse(ID=grant.ID, TTL=grant.TTL)
            if request.HasField("lease_revoke"):
                batch.lease_revoke(request.lease_revoke.ID)
                return rpc_pb2.LeaseRevokeResponse()
        raise AssertionError(f"unexpected proposal {request}")

    async def propose(self, request: internal_pb2.InternalRequest) -> Any:
        self.proposals.append(request)
        loop = asyncio.get_running_loop()
        response, revision = await loop.run_in_executor(self._writer, self._apply, request)
        response.header.CopyFrom(self.header(revision))
        return response

    def close(self) -> None:
        self._writer.shutdown()
        self.store.close()
