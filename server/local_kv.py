"""In-process KV access for the services built on KV (lock, election, leases' keys).

etcd runs its lock and election services as a gRPC client of its own server; here they call
the node directly: writes go through `node.propose` (Raft, WAL, apply), linearizable reads
take `node.read_barrier()` and then read the store, and watches use the engine's watch hub.

`HubWatch` adapts a pull-based hub watcher to asyncio. The hub calls `notify` on the storage
thread, so it only schedules `Event.set` on the loop (`call_soon_threadsafe`); the loop then
pulls with `take`, which never blocks the writer and never drops events.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from api.etcdserverpb import internal_pb2, rpc_pb2
from api.mvccpb import kv_pb2
from engine.errors import CompactedError

# Upper bound of events pulled from a watcher in one go; the hub never splits a revision, so
# a single large revision may still exceed it.
TAKE_EVENTS_MAX = 1000


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # all 0xff: every key from `prefix` on


def compacted_revision(batch: object) -> int | None:
    """The compact revision if `batch` (a `take` result) says the watcher was compacted."""
    if isinstance(batch, list):
        return None
    return int(batch.compact_revision)  # type: ignore[attr-defined]


class LoopNotifier:
    """Hands the hub's notifications from the storage thread to the loop in batches: one
    `call_soon_threadsafe` (a wake-up write) per burst, not one per watcher, so a write seen
    by 1,000 watchers costs the writer one syscall."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[HubWatch] = []

    def notify(self, watch: HubWatch) -> None:
        """Any thread."""
        with self._lock:
            first = not self._pending
            self._pending.append(watch)
        if first:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody left to tell
                self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for watch in pending:
            watch._news_on_loop()


_notifiers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopNotifier] = (
    weakref.WeakKeyDictionary()
)


def _notifier_for(loop: asyncio.AbstractEventLoop) -> LoopNotifier:
    notifier = _notifiers.get(loop)
    if notifier is None:
        notifier = _notifiers[loop] = LoopNotifier(loop)
    return notifier


class HubWatch:
    """One hub watcher, awaitable from the event loop."""

    def __init__(
        self,
        node: Any,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        *,
        prev_kv: bool = False,
        filters: Iterable[int] = (),
        on_news: Callable[[], None] | None = None,
    ) -> None:
        self._notifier = _notifier_for(asyncio.get_running_loop())
        self._news = asyncio.Event()
        self._on_news = on_news
        self.closed = False
        self._watcher = node.store.watch_hub.watch(
            key,
            range_end,
            start_revision,
            prev_kv=prev_kv,
            filters=frozenset(filters),
            notify=self._notify,
        )

    def _notify(self) -> None:
        # Runs on the storage thread.
        if not self.closed:
            self._notifier.notify(self)

    def _news_on_loop(self) -> None:
        if self.closed:
            return
        self._news.set()
        if self._on_news is not None and not self.closed:
            self._on_news()

    def take(self, max_events: int = TAKE_EVENTS_MAX) -> Any:
        """What the watcher has now: a list of events ([] if none) or the hub's Compacted."""
        self._news.clear()
        return self._watcher.take(max_events)

    async def wait(self) -> None:
        """Returns once the hub has said there may be news since the last `take`."""
        await self._news.wait()

    async def next_batch(self, max_events: int = TAKE_EVENTS_MAX) -> Any:
        """The next non-empty list of events, or the hub's Compacted."""
        while True:
            batch = self.take(max_events)
            if not isinstance(batch, list) or batch:
                return batch
            await self.wait()

    def caught_up(self, revision: int) -> bool:
        """Every event up to `revision` has been taken. (The store's revision moves just
        before the hub publishes that revision, so an empty `take` alone does not prove it.)"""
        next_revision: int = self._watcher.next_revision
        return next_revision > revision

    def cancel(self) -> None:
        if not self.closed:
            self.closed = True
            self._watcher.cancel()


class LocalKV:
    """The few KV calls the lock and election services make, against the node itself."""

    def __init__(self, node: Any) -> None:
        self.node = node

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        response: rpc_pb2.TxnResponse = await self.node.propose(
            internal_pb2.InternalRequest(txn=request)
        )
        return response

    async def delete(self, key: bytes) -> rpc_pb2.DeleteRangeResponse:
        response: rpc_pb2.DeleteRangeResponse = await self.node.propose(
            internal_pb2.InternalRequest(delete_range=rpc_pb2.DeleteRangeRequest(key=key))
        )
        return response

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        await self.node.read_barrier()
        response: rpc_pb2.RangeResponse = self.node.store.range(request)
        # The store knows only the revision; etcd's answers built on a Range (Leader, a Lock
        # that waited) carry the whole header, as the KV service's Range does.
        response.header.CopyFrom(self.node.header(response.header.revision))
        return response

    async def get(self, key: bytes) -> rpc_pb2.RangeResponse:
        return await self.range(rpc_pb2.RangeRequest(key=key))

    async def first_created(self, prefix: bytes) -> rpc_pb2.RangeResponse:
        """The key under `prefix` with the lowest create revision (clientv3 WithFirstCreate)."""
        return await self.range(_by_create(prefix, rpc_pb2.RangeRequest.ASCEND))

    async def wait_delete(self, key: bytes, revision: int) -> None:
        """Returns once `key` is deleted at a revision >= `revision` (concurrency.waitDelete)."""
        watch = HubWatch(self.node, key, b"", revision)
        try:
            while True:
                batch = await watch.next_batch()
                if compacted_revision(batch) is not None:
                    raise CompactedError()
                if any(event.type == kv_pb2.Event.DELETE for event in batch):
                    return
        finally:
            watch.cancel()

    async def wait_deletes(self, prefix: bytes, max_create_revision: int) -> rpc_pb2.ResponseHeader:
        """Returns once no key under `prefix` has create revision <= `max_create_revision`
        (concurrency.waitDeletes): waits on the newest such key each time."""
        while True:
            request = _by_create(prefix, rpc_pb2.RangeRequest.DESCEND)
            request.max_create_revision = max_create_revision
            response = await self.range(request)
            if not response.kvs:
                return response.header
            await self.wait_delete(response.kvs[0].key, response.header.revision)


def _by_create(prefix: bytes, order: int) -> rpc_pb2.RangeRequest:
    return rpc_pb2.RangeRequest(
        key=prefix,
        range_end=prefix_end(prefix),
        sort_target=rpc_pb2.RangeRequest.CREATE,
        sort_order=order,  # type: ignore[arg-type]
        limit=1,
    )
