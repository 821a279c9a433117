"""The Raft driver: the event loop's side of the write path and of linearizable reads.

Theory of operation: the loop owns the RawNode and its MemoryStorage. A handler proposes an
encoded InternalRequest and awaits a future keyed by the request ID. The driver keeps at most
one Ready in flight on the storage thread; while it is there, new proposals accumulate inside
Raft, and the next `ready()` carries them all (group commit: one WAL write and one fsync for
the whole batch). When the storage thread reports the Ready persisted and applied, the driver
(once per batch) appends the entries to MemoryStorage, calls `advance`, resolves the waiting
handlers and the read barriers whose read index is now applied, and looks for the next Ready.

Linearizable reads are batched: every `read_barrier()` that arrives while no ReadIndex
request is outstanding joins one new request; those arriving while one is outstanding join
the next, because a read index taken before they arrived may miss writes they have seen
acknowledged. A batch resolves once the applied index reaches its read index.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from . import errors
from .storage_thread import ReadyJob, StorageThread

log = logging.getLogger(__name__)

# etcd fails proposals with "too many requests" when apply lags commit by more than this.
MAX_GAP_ENTRIES = 5000
READ_INDEX_RETRY_S = 0.5
# Inline Readies only when the loop blocking on an fsync delays no other waiting request
# (measured: inline is faster at 1 client, slower at 64). PETRA_INLINE_WAITERS_MAX=-1 turns
# it off, for comparisons.
INLINE_WAITERS_MAX = int(os.environ.get("PETRA_INLINE_WAITERS_MAX", "1"))
INLINE_QUIET_S = 0.1


class _ReadBatch:
    __slots__ = ("ctx", "futures", "index", "sent_at_s", "first_sent_at_s")

    def __init__(self, ctx: bytes) -> None:
        self.ctx = ctx
        # One future per reader, so that a reader's cancellation touches only its own.
        self.futures: list[asyncio.Future[None]] = []
        self.index = -1
        self.sent_at_s = 0.0
        self.first_sent_at_s = 0.0

    def resolve(self, exc: BaseException | None) -> None:
        for future in self.futures:
            if future.done():
                continue
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)


class RaftDriver:
    def __init__(
        self,
        raw_node: Any,
        memory_storage: Any,
        storage: StorageThread | None,
        loop: asyncio.AbstractEventLoop,
        *,
        applied_index: int,
        tick_interval_s: float,
        on_conf_change: Callable[[Any], None] | None = None,
        on_snapshot: Callable[[int], None] | None = None,
        request_timeout_s: float = 7.0,
    ) -> None:
        self.raw = raw_node
        self.memory = memory_storage
        self.storage = storage  # set later when built after the driver
        self.loop = loop
        self.tick_interval_s = tick_interval_s
        self.on_conf_change = on_conf_change
        self.on_snapshot = on_snapshot
        # Invariant: applied_index <= committed index of the Raft log.
        self.applied_index = applied_index
        self.commit_index = applied_index
        self.term = 0
        self.leader_id = 0
        self.is_leader = False
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._proposals: list[tuple[int, bytes]] = []
        # (deadline, request ID) in proposal order, so deadlines ascend: the tick fails the
        # expired ones with etcd's "request timed out" (the entry may still apply later).
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        self.request_timeout_s = request_timeout_s
        # The peer transport's send(messages), set when there is one.
        self.send: Callable[[Any], None] | None = None
        self._in_flight: ReadyJob | None = None
        self._in_flight_ready: Any = None
        self._scheduled = False
        self._stopped = False
        self._leader_callbacks: list[Callable[[bool], None]] = []
        self._read_ctx = itertools.count(1)
        self._read_next: _ReadBatch | None = None  # gathering; not yet sent to Raft
        self._read_sent: dict[bytes, _ReadBatch] = {}  # sent, waiting for a ReadState
        self._read_ready: list[_ReadBatch] = []  # have a read index, waiting for apply
        self._ticker: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        # Set by the node for a cluster of one voter: reads then skip the ReadIndex round.
        self.single_voter = False
        # Run a Ready on the loop (storage thread idle) when at most this many requests wait.
        self.inline_waiters_max = INLINE_WAITERS_MAX
        # Until then no Ready is inlined: set whenever more than inline_waiters_max requests
        # wait at once (concurrent clients), for INLINE_QUIET_S.
        self._overlap_until_s = 0.0
        # Index of the first entry of this leader's term (0: not leader, or unknown).
        self._term_start_index = 0

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._ticker = self.loop.call_later(self.tick_interval_s, self._tick)
        self.kick()

    async def stop(self) -> None:
        """Stop taking work, fail what waits, and let the Ready in flight finish."""
        self._stopped = True
        if self._ticker is not None:
            self._ticker.cancel()
        if self._in_flight is not None:
            self._idle.clear()
            await self._idle.wait()
        self._fail_all(errors.StoppedError())

    async def stop_ticking(self) -> None:
        """Stop the clock only (a crashed storage thread: nothing will finish)."""
        self._stopped = True
        if self._ticker is not None:
            self._ticker.cancel()

    def on_leader_change(self, callback: Callable[[bool], None]) -> None:
        self._leader_callbacks.append(callback)

    # -- writes ----------------------------------------------------------------------------
    def propose(
        self, request_id: int, data: bytes, *, may_run_long: bool = False
    ) -> asyncio.Future[Any]:
        """Propose `data`; the future gets the applied result for `request_id`. A request that
        `may_run_long` (a range delete: 300,000 keys take seconds) is never applied inline on
        the loop, where it would stall every other client meanwhile."""
        if self._stopped:
            raise errors.StoppedError()
        if self.commit_index - self.applied_index > MAX_GAP_ENTRIES:
            raise errors.TooManyRequestsError()
        if not self.is_leader:
            raise errors.NoLeaderError() if not self.leader_id else errors.NotCapableError()
        future = self.loop.create_future()
        self._waiters[request_id] = future
        if len(self._waiters) > self.inline_waiters_max or may_run_long:
            self._overlap_until_s = time.monotonic() + INLINE_QUIET_S
        self._deadlines.append((time.monotonic() + self.request_timeout_s, request_id))
        # Handed to Raft in one batch by _drive: one append message for all of them.
        self._proposals.append((request_id, data))
        self.kick()
        return future

    def _flush_proposals(self) -> None:
        proposals, self._proposals = self._proposals, []
        try:
            self.raw.propose_batch([data for _, data in proposals])
        except Exception as exc:
            log.debug("proposals dropped: %s", exc)
            for request_id, _ in proposals:
                future = self._waiters.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_exception(errors.NoLeaderError())

    # -- reads -----------------------------------------------------------------------------
    def read_barrier(self) -> asyncio.Future[None]:
        """A future that resolves once a read index confirmed after this call is applied."""
        if self._stopped:
            raise errors.StoppedError()
        if not self.leader_id:
            raise errors.NoLeaderError()
        if self.single_voter and self.is_leader and 0 < self._term_start_index <= self.commit_index:
            return self._local_read_index()
        batch = self._read_next
        if batch is None:
            batch = _ReadBatch(str(next(self._read_ctx)).encode())
            self._read_next = batch
            self.kick()
        future: asyncio.Future[None] = self.loop.create_future()
        batch.futures.append(future)
        return future

    def _local_read_index(self) -> asyncio.Future[None]:
        """The lone voter's read index, without a Raft round: its commit index, as Raft itself
        answers a singleton's ReadIndex (no one else can lead, so leadership needs no check).
        Every acknowledged write was applied, so committed, so is at or below it; and the
        leader has committed an entry of its own term, so the index is current."""
        future: asyncio.Future[None] = self.loop.create_future()
        if self.applied_index >= self.commit_index:
            future.set_result(None)
            return future
        batch = _ReadBatch(b"")
        batch.index = self.commit_index
        batch.futures.append(future)
        self._read_ready.append(batch)
        return future

    def _send_read_index(self) -> None:
        batch = self._read_next
        if batch is None or self._read_sent:
            return  # one ReadIndex request outstanding at a time; the next batch waits
        self._read_next = None
        batch.sent_at_s = batch.first_sent_at_s = time.monotonic()
        self._read_sent[batch.ctx] = batch
        self.raw.read_index(batch.ctx)

    def _on_read_states(self, read_states: Any) -> None:
        for state in read_states:
            batch = self._read_sent.pop(bytes(state.request_ctx), None)
            if batch is None:
                continue
            batch.index = state.index
            self._read_ready.append(batch)
        self._release_reads()

    def _release_reads(self) -> None:
        if not self._read_ready:
            return
        waiting = []
        for batch in self._read_ready:
            if batch.index <= self.applied_index:
                batch.resolve(None)
            else:
                waiting.append(batch)
        self._read_ready = waiting

    def _expire_proposals(self) -> None:
        deadlines = self._deadlines
        if not deadlines:
            return
        now_s = time.monotonic()
        while deadlines and deadlines[0][0] < now_s:
            _, request_id = deadlines.popleft()
            future = self._waiters.pop(request_id, None)
            if future is not None and not future.done():
                future.set_exception(errors.RequestTimeoutError())

    def _retry_lost_reads(self) -> None:
        # A ReadIndex request can be dropped (leader change, no commit in this term yet): ask
        # again rather than leave the readers hanging.
        now_s = time.monotonic()
        for ctx, batch in list(self._read_sent.items()):
            if now_s - batch.first_sent_at_s > self.request_timeout_s:
                del self._read_sent[ctx]
                batch.resolve(errors.RequestTimeoutError())
            elif now_s - batch.sent_at_s > READ_INDEX_RETRY_S:
                batch.sent_at_s = now_s
                if self.leader_id:
                    self.raw.read_index(ctx)

    # -- peers -----------------------------------------------------------------------------
    def step(self, message: Any) -> None:
        """A Raft message from a peer (the peer transport calls this on the loop)."""
        if self._stopped:
            return
        self.raw.step(message)
        self.kick()

    def _send(self, messages: Any) -> None:
        # No peer transport yet (single-member clusters): a lone voter sends nothing.
        if self.send is not None:
            self.send(messages)

    # -- the loop --------------------------------------------------------------------------
    def kick(self) -> None:
        if not self._scheduled and self._in_flight is None:
            self._scheduled = True
            self.loop.call_soon(self._drive)

    def _tick(self) -> None:
        if self._stopped:
            return
        self.raw.tick()
        self._retry_lost_reads()
        self._expire_proposals()
        self._ticker = self.loop.call_later(self.tick_interval_s, self._tick)
        self.kick()

    def _drive(self) -> None:
        self._scheduled = False
        if self._in_flight is not None:
            return
        if self._proposals:
            self._flush_proposals()
        self._send_read_index()
        if not self.raw.has_ready():
            return
        rd = self.raw.ready()
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
            # A new leader appends one entry of its term at once; reads may use the local
            # read index once that entry is committed.
            leading = self.is_leader and rd.entries
            self._term_start_index = rd.entries[-1].index if leading else 0
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
            self.commit_index = max(self.commit_index, rd.hard_state.commit)
        if rd.read_states:
            self._on_read_states(rd.read_states)
        if rd.messages and self.is_leader:
            # A leader may send while it persists (Raft thesis 10.2.1); a follower must not
            # acknowledge entries before they are on its disk, so it sends in on_job_done.
            self._send(rd.messages)
        job = ReadyJob(rd.hard_state, rd.entries, rd.must_sync, rd.committed_entries)
        if (
            rd.hard_state is None
            and not rd.entries
            and not rd.committed_entries
            and rd.snapshot is None
        ):
            # Nothing to persist or apply (a read index, a leader change): no storage trip.
            self._in_flight_ready = rd
            self._in_flight = job
            self.on_job_done(job)
            return
        self._in_flight = job
        self._in_flight_ready = rd
        assert self.storage is not None
        # One request waiting (or none) and none overlapping lately: the loop may as well do
        # the write itself, if the storage thread is idle, and save two thread hand-offs
        # (server/storage_thread.py). Under load requests reach the loop in a trickle, so a
        # batch of one is common there too, and blocking the loop on its fsync would stall
        # the requests on their way (measured over gRPC at 64 clients: 1,690 vs 2,250 puts/s).
        if (
            len(self._waiters) <= self.inline_waiters_max
            and time.monotonic() >= self._overlap_until_s
            and self.storage.run_inline(job)
        ):
            return
        self.storage.submit(job)

    def on_job_done(self, job: ReadyJob) -> None:
        """Called on the loop (once per Ready) when the storage thread finished `job`."""
        assert job is self._in_flight
        rd = self._in_flight_ready
        self._in_flight = None
        self._in_flight_ready = None
        if rd.entries:
            self.memory.append(rd.entries)
        if rd.hard_state is not None:
            self.memory.set_hard_state(rd.hard_state)
        for entry in rd.committed_entries:
            if entry.type != 0 and self.on_conf_change is not None:
                self.on_conf_change(entry)
        if rd.messages and not self.is_leader:
            self._send(rd.messages)
        self.raw.advance(rd)
        if rd.committed_entries:
            self.applied_index = max(self.applied_index, rd.committed_entries[-1].index)
        for request_id, outcome in job.results:
            future = self._waiters.pop(request_id, None)
            if future is None or future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        self._release_reads()
        if job.snapshot_index and self.on_snapshot is not None:
            self.on_snapshot(job.snapshot_index)
        if self._stopped:
            self._idle.set()
            return
        self.kick()

    def _on_soft_state(self, soft: Any) -> None:
        leader = bool(soft.raft_state == _leader_state())
        self.leader_id = soft.lead
        if leader != self.is_leader:
            self.is_leader = leader
            if not leader:
                # Proposals of a deposed leader may never commit: fail them as etcd does.
                self._fail_all(errors.LeaderChangedError())
            for callback in self._leader_callbacks:
                callback(leader)

    def _fail_all(self, exc: BaseException) -> None:
        self._proposals = []
        waiters, self._waiters = self._waiters, {}
        for future in waiters.values():
            if not future.done():
                future.set_exception(exc)
        batches = list(self._read_sent.values()) + self._read_ready
        if self._read_next is not None:
            batches.append(self._read_next)
        self._read_sent, self._read_ready, self._read_next = {}, [], None
        for batch in batches:
            batch.resolve(exc)


def _leader_state() -> Any:
    from raft import StateType

    return StateType.LEADER
