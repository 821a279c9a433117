"""The etcdserverpb.Watch gRPC service: one bidi stream carries many watchers.

Theory of operation. `WatchStream` holds one stream's state and no gRPC: its watchers (each a
`HubWatch` on the engine's watch hub), the control responses not yet sent (created, canceled,
progress), and the set of watchers the hub said have news. The handler runs two tasks: a
reader that feeds requests to `WatchStream.handle`, and a sender that repeatedly calls `poll`
and writes what it returns. The hub is pull-based: the storage thread only calls `notify`,
which marks the watcher on the loop; events wait in the hub (or are replayed from LMDB) until
this stream's sender pulls them. So a slow client only slows its own stream, and the memory a
stream holds is bounded by one poll's worth of responses.

Rules kept (etcd 3.4 v3rpc/watch.go, mvcc/watcher.go; reference section 3):
- the created response of a watcher always precedes its events: control responses are sent
  first, and a watcher's events are pulled only once its created response has been queued;
- auto watch IDs count up from 0 per stream, skipping IDs in use; an explicit ID in use is
  refused (created + canceled, watch_id -1, the mvcc error text);
- key >= range_end is refused with "mvcc: watcher range is empty";
- a compacted watcher gets compact_revision and canceled (header revision 0), and is dropped;
- a progress request is answered (watch_id -1, current revision) once every watcher of the
  stream has nothing pending, so no event at or below that revision can follow it;
- progress_notify watchers that got no events during an interval get an empty response;
- fragment: a response over max-request-bytes + 512 KiB with >= 2 events is split.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from server.errors import NoLeaderError
from server.local_kv import TAKE_EVENTS_MAX, HubWatch, compacted_revision
from server.service_errors import abort

log = logging.getLogger(__name__)

AUTO_WATCH_ID = 0
INVALID_WATCH_ID = -1
# gRPC's framing allowance etcd adds to max-request-bytes before fragmenting.
GRPC_OVERHEAD_BYTES = 512 * 1024
# etcd's experimental-watch-progress-notify-interval default.
PROGRESS_NOTIFY_INTERVAL_S = 600.0
PROGRESS_RETRY_S = 0.005
# Events one poll gathers at most (whole takes, so a little more): what a stream holds in
# memory at a time, however many of its watchers are behind.
POLL_EVENTS_MAX = 4 * TAKE_EVENTS_MAX
# etcd 3.4's mvcc sends a compacted watcher's cancel as WatchResponse{CompactRevision} with no
# revision, and v3rpc builds the header from that: cluster, member and term, revision 0.
COMPACTED_HEADER_REVISION = 0

ERR_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
ERR_EMPTY_RANGE = "mvcc: watcher range is empty"


@dataclass(slots=True)
class StreamWatcher:
    watch_id: int
    hub: HubWatch
    progress_notify: bool
    fragment: bool
    # Events were sent since the last progress tick (etcd then skips the notify).
    sent_since_tick: bool = False


@dataclass(slots=True, eq=False)  # streams are kept in a set, by identity
class WatchStream:
    node: Any
    max_request_bytes: int = 1_572_864
    watchers: dict[int, StreamWatcher] = field(default_factory=dict)
    # Control responses (created, canceled, progress) to send before any event.
    control: list[rpc_pb2.WatchResponse] = field(default_factory=list)
    # Watch IDs the hub said may have news; a dict keeps arrival order for fairness.
    pending: dict[int, None] = field(default_factory=dict)
    progress_requested: bool = False
    progress_tick_due: bool = False
    closed: bool = False
    failure: Exception | None = None  # why the reader ended the stream, if it did
    wants_progress: bool = False  # some watcher asked for progress notifies
    next_id: int = 0
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    # -- requests ----------------------------------------------------------------------

    def handle(self, request: rpc_pb2.WatchRequest) -> None:
        kind = request.WhichOneof("request_union")
        if kind == "create_request":
            self.create(request.create_request)
        elif kind == "cancel_request":
            self.cancel(request.cancel_request.watch_id)
        elif kind == "progress_request":
            self.progress_requested = True
            self._wake()
        # etcd ignores an unknown request instead of failing the whole stream.

    def create(self, request: rpc_pb2.WatchCreateRequest) -> int:
        """Adds a watcher; returns its ID, or -1 if refused (the refusal is queued)."""
        key = request.key or b"\x00"
        range_end = request.range_end
        from_key = range_end == b"\x00"
        current = self.node.store.revision
        error = None
        if range_end and not from_key and key >= range_end:
            error = ERR_EMPTY_RANGE
        elif request.watch_id != AUTO_WATCH_ID and request.watch_id in self.watchers:
            error = ERR_DUPLICATE_ID
        if error is not None:
            self._queue(self._response(current, INVALID_WATCH_ID, created=True, canceled=True))
            self.control[-1].cancel_reason = error
            return INVALID_WATCH_ID
        watch_id = request.watch_id or self._next_auto_id()
        if request.start_revision < 0:
            # etcd 3.4 takes a negative start for an unsynced watcher below any compaction:
            # created, then cancelled as compacted (-1 when the store never was).
            self._queue(self._response(current, watch_id, created=True))
            canceled = self._response(COMPACTED_HEADER_REVISION, watch_id, canceled=True)
            canceled.compact_revision = self.node.store.compact_revision or -1
            self._queue(canceled)
            return watch_id
        start_revision = request.start_revision or current + 1
        hub = HubWatch(
            self.node,
            key,
            range_end,
            start_revision,
            prev_kv=request.prev_kv,
            filters=request.filters,
            on_news=lambda: self._mark(watch_id),
        )
        watcher = StreamWatcher(watch_id, hub, request.progress_notify, request.fragment)
        self.wants_progress |= request.progress_notify
        self.watchers[watch_id] = watcher
        self._queue(self._response(current, watch_id, created=True))
        self.pending[watch_id] = None
        return watch_id

    def cancel(self, watch_id: int) -> None:
        watcher = self.watchers.pop(watch_id, None)
        if watcher is None:
            return  # etcd answers nothing for an unknown ID
        watcher.hub.cancel()
        self.pending.pop(watch_id, None)
        self._queue(self._response(self.node.store.revision, watch_id, canceled=True))

    def progress_tick(self) -> None:
        """The progress-notify interval elapsed."""
        self.progress_tick_due = True
        self._wake()

    def close(self) -> None:
        """The stream ended: every hub watcher goes."""
        self.closed = True
        for watcher in self.watchers.values():
            watcher.hub.cancel()
        self.watchers.clear()
        self.pending.clear()
        self._wake()

    # -- responses ---------------------------------------------------------------------

    def poll(self) -> list[rpc_pb2.WatchResponse]:
        """What to send now, in order; [] if nothing (then `wait`)."""
        self._wakeup.clear()
        if self.control:
            control, self.control = self.control, []
            return control
        out: list[rpc_pb2.WatchResponse] = []
        events = 0
        for watch_id in list(self.pending):
            if events >= POLL_EVENTS_MAX:
                break  # the rest stay pending, in order, for the next poll
            self.pending.pop(watch_id, None)
            pulled = self._pull(watch_id)
            events += sum(len(response.events) for response in pulled)
            out.extend(pulled)
        if self.progress_tick_due:
            self.progress_tick_due = False
            out.extend(self._progress_notifies())
        if self.progress_requested and not out and not self.pending:
            out.extend(self._progress_reply())
        return out

    async def wait(self) -> None:
        await self._wakeup.wait()

    def _pull(self, watch_id: int) -> list[rpc_pb2.WatchResponse]:
        watcher = self.watchers.get(watch_id)
        if watcher is None:
            return []
        current = self.node.store.revision
        batch = watcher.hub.take(TAKE_EVENTS_MAX)
        compact_revision = compacted_revision(batch)
        if compact_revision is not None:
            del self.watchers[watch_id]
            watcher.hub.cancel()
            response = self._response(COMPACTED_HEADER_REVISION, watch_id, canceled=True)
            response.compact_revision = compact_revision
            return [response]
        if not batch:
            return []
        if len(batch) >= TAKE_EVENTS_MAX:
            self.pending[watch_id] = None  # there may be more behind this batch
        watcher.sent_since_tick = True
        revision = max(current, batch[-1].kv.mod_revision)
        response = self._response(revision, watch_id)
        response.events.extend(batch)
        if watcher.fragment:
            return fragments(response, self.max_request_bytes + GRPC_OVERHEAD_BYTES)
        return [response]

    def _progress_notifies(self) -> list[rpc_pb2.WatchResponse]:
        """An empty response to each progress_notify watcher that is synced and got no events
        during the interval (etcd: RequestProgress only answers synced watchers)."""
        out = []
        current = self.node.store.revision
        for watcher in list(self.watchers.values()):
            if watcher.progress_notify and not watcher.sent_since_tick:
                events = self._pull(watcher.watch_id)
                if events:
                    out.extend(events)
                elif watcher.hub.caught_up(current):
                    out.append(self._response(current, watcher.watch_id))
            watcher.sent_since_tick = False
        return out

    def _progress_reply(self) -> list[rpc_pb2.WatchResponse]:
        """The answer to a progress request, if every watcher is caught up right now."""
        current = self.node.store.revision
        out: list[rpc_pb2.WatchResponse] = []
        for watch_id in list(self.watchers):
            out.extend(self._pull(watch_id))
            if sum(len(response.events) for response in out) >= POLL_EVENTS_MAX:
                break
        if out:
            return out  # not caught up yet: send these, answer on a later poll
        if not all(watcher.hub.caught_up(current) for watcher in self.watchers.values()):
            # The store's revision moved but the hub has not published it yet: look again
            # in a moment (the publish may concern none of our watchers, so no notify).
            asyncio.get_running_loop().call_later(PROGRESS_RETRY_S, self._wake)
            return []
        self.progress_requested = False
        return [self._response(current, INVALID_WATCH_ID)]

    # -- helpers ------------------------------------------------------------------------

    def _next_auto_id(self) -> int:
        while self.next_id in self.watchers:
            self.next_id += 1
        watch_id = self.next_id
        self.next_id += 1
        return watch_id

    def _mark(self, watch_id: int) -> None:
        if watch_id in self.watchers:
            self.pending[watch_id] = None
            self._wake()

    def _queue(self, response: rpc_pb2.WatchResponse) -> None:
        self.control.append(response)
        self._wake()

    def _wake(self) -> None:
        self._wakeup.set()

    def _response(
        self, revision: int, watch_id: int, *, created: bool = False, canceled: bool = False
    ) -> rpc_pb2.WatchResponse:
        return rpc_pb2.WatchResponse(
            header=self.node.header(revision),
            watch_id=watch_id,
            created=created,
            canceled=canceled,
        )


def fragments(response: rpc_pb2.WatchResponse, limit_bytes: int) -> list[rpc_pb2.WatchResponse]:
    """etcd's sendFragments: split a response over `limit_bytes` holding >= 2 events; every
    part but the last has fragment=true; each part holds at least one event."""
    if response.ByteSize() < limit_bytes or len(response.events) < 2:
        return [response]
    parts = []
    events = list(response.events)
    index = 0
    while index < len(events):
        part = rpc_pb2.WatchResponse()
        part.CopyFrom(response)
        del part.events[:]
        part.fragment = True
        while index < len(events):
            part.events.append(events[index])
            if len(part.events) > 1 and part.ByteSize() >= limit_bytes:
                del part.events[-1]
                break
            index += 1
        parts.append(part)
    parts[-1].fragment = False
    return parts


def _requires_leader(context: Any) -> bool:
    """clientv3.WithRequireLeader (etcdctl watch uses it): the `hasleader` metadata."""
    metadata = context.invocation_metadata() or ()
    return any(key == "hasleader" and value == "true" for key, value in metadata)


class WatchService(rpc_pb2_grpc.WatchServicer):
    def __init__(
        self,
        node: Any,
        *,
        progress_interval_s: float = PROGRESS_NOTIFY_INTERVAL_S,
        rng: random.Random | None = None,
    ) -> None:
        self._node = node
        self._progress_interval_s = progress_interval_s
        self._rng = rng or random.Random()
        self.streams: set[WatchStream] = set()

    async def Watch(
        self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest], context: Any
    ) -> None:
        if _requires_leader(context) and not self._node.leader_id:
            await abort(context, NoLeaderError())
        stream = WatchStream(self._node, self._node.config.max_request_bytes)
        self.streams.add(stream)
        reader = asyncio.create_task(self._read(request_iterator, stream))
        tasks = [reader]
        try:
            while not stream.closed:
                responses = stream.poll()
                if stream.wants_progress and len(tasks) == 1:
                    # The progress timer runs only for streams that asked for notifies.
                    tasks.append(asyncio.create_task(self._tick(stream)))
                if not responses:
                    await stream.wait()
                    continue
                for response in responses:
                    await context.write(response)
            if stream.failure is not None:
                await abort(context, stream.failure)
        finally:
            for task in tasks:
                task.cancel()
            stream.close()
            self.streams.discard(stream)
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    def watcher_count(self) -> int:
        return sum(len(stream.watchers) for stream in self.streams)

    async def _read(
        self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest], stream: WatchStream
    ) -> None:
        # The client closing its side ends nothing: etcd keeps sending events until the
        # client cancels the call.
        try:
            async for request in request_iterator:
                stream.handle(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A request the stream could not take (or a broken transport): end the call
            # with that error rather than leave a half-dead stream behind.
            stream.failure = exc
            stream.close()

    async def _tick(self, stream: WatchStream) -> None:
        while True:
            # etcd adds up to 10 % jitter so that many streams do not notify in lockstep.
            jitter = 1 + self._rng.random() / 10
            await asyncio.sleep(self._progress_interval_s * jitter)
            stream.progress_tick()
