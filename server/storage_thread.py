"""The storage thread: the one owner of the WAL and of every engine write transaction.

Theory of operation: the event loop hands over one `ReadyJob` per Raft Ready (at most one in
flight, so proposals that arrive meanwhile pile up in Raft and become the next, bigger batch:
the group commit). For each job the thread
  1. writes the hard state and new entries to the WAL, fsyncing once if Raft says it must
     (between the failpoints server.before_wal_save and server.after_wal_save);
  2. applies the committed entries in one engine transaction (failpoints server.before_apply,
     server.after_apply); applying strictly after step 1 is the single-member rule of etcd#14370:
     nothing just appended is applied, and so acknowledged, before it is on disk;
  3. takes a snapshot when snapshot-count entries were applied since the last one;
  4. posts the results back to the loop with one `call_soon_threadsafe`.
Other work that must run on the writer (defragment, compaction steps, engine sync) goes
through `call(fn)`, in the same queue so it is ordered with the writes. A failure to write
the WAL is fatal (`on_fatal`): the process must not go on as if the write happened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wal import failpoints

from .applier import Applier, Result

log = logging.getLogger(__name__)

# Failpoints (wal/failpoints.py; arm with PETRA_FAILPOINTS=name:kill): etcd's raftBeforeSave,
# raftAfterSave, and before/after the engine commit of an applied batch.
BEFORE_SAVE = "server.before_wal_save"
AFTER_SAVE = "server.after_wal_save"
BEFORE_APPLY = "server.before_apply"
AFTER_APPLY = "server.after_apply"


@dataclass(slots=True)
class ReadyJob:
    hard_state: Any
    entries: Sequence[Any]
    must_sync: bool
    committed: Sequence[Any]
    # Filled by the storage thread.
    results: list[Result] = field(default_factory=list)
    snapshot_index: int = 0
    error: BaseException | None = None


@dataclass(slots=True)
class _CallJob:
    fn: Callable[[], Any]
    future: concurrent.futures.Future[Any]


_STOP = object()


class SnapshotPolicy:
    """When and how to snapshot: `take(term, index)` runs on the storage thread."""

    def __init__(self, count: int, take: Callable[[int, int], None], last_index: int) -> None:
        self.count = count
        self.take = take
        # Invariant: last_index <= the applied index.
        self.last_index = last_index

    def maybe_take(self, term: int, index: int) -> int:
        if self.count <= 0 or index - self.last_index <= self.count:
            return 0
        self.take(term, index)
        self.last_index = index
        return index


class StorageThread:
    def __init__(
        self,
        wal: Any,
        applier: Applier,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[ReadyJob], None],
        *,
        snapshots: SnapshotPolicy | None = None,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self.wal = wal
        self.applier = applier
        self.store = applier.store
        self.loop = loop
        self.on_done = on_done
        self.snapshots = snapshots
        self.on_fatal = on_fatal
        # The WAL write + fsync latency histogram (server/metrics.py), if metrics are wired.
        self.fsync_seconds: Any = None
        # Synced WAL writes and the entries they carried: their ratio is the group-commit size.
        self.synced_writes = 0
        self.synced_entries = 0
        # The engine's file size after the last applied batch, for the loop's quota check.
        self.db_size_bytes = self.store.size_bytes()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # True while the engine may have compaction work left (checked once at start, set
        # again by every applied Compact).
        self._compacting = bool(self.store.compaction_pending())
        self._compaction_waiters: list[concurrent.futures.Future[Any]] = []
        self._thread = threading.Thread(target=self._run, name="petra-storage", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: ReadyJob) -> None:
        self._queue.put(job)

    def call(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `fn` on the storage thread, ordered after the jobs already queued."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put(_CallJob(fn, future))
        return asyncio.wrap_future(future, loop=self.loop)

    def stop(self) -> None:
        """Finish the queued jobs, then end the thread (blocking; call from a thread pool)."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._next_job()
            if job is _STOP:
                return
            if isinstance(job, _CallJob):
                self._run_call(job)
            elif job is None:
                self._compaction_step()
            else:
                self._run_ready(job)

    def _next_job(self) -> Any:
        # Background compaction proceeds in bounded steps only while nothing else waits.
        if self._compacting:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                return None
        return self._queue.get()

    def when_compacted(self) -> asyncio.Future[Any]:
        """Resolves once the engine has no compaction work left (Compact physical=true); the
        steps keep interleaving with writes meanwhile."""
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def register() -> None:
            if self._compacting:
                self._compaction_waiters.append(done)
            else:
                done.set_result(None)

        self._queue.put(_CallJob(register, concurrent.futures.Future()))
        return asyncio.wrap_future(done, loop=self.loop)

    def _compaction_step(self) -> None:
        try:
            self._compacting = self.store.compaction_step()
        except Exception as exc:  # noqa: BLE001 - the engine failing to write is fatal
            self.on_fatal(exc)
            return
        if not self._compacting:
            waiters, self._compaction_waiters = self._compaction_waiters, []
            for done in waiters:
                done.set_result(None)

    def _run_call(self, job: _CallJob) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            job.future.set_exception(exc)

    def _run_ready(self, job: ReadyJob) -> None:
        try:
            self._persist(job)
        except BaseException as exc:  # noqa: BLE001 - a failed WAL write or fsync is fatal
            log.critical("WAL write failed: %s", exc)
            self.on_fatal(exc)
            return
        try:
            self._apply(job)
        except BaseException as exc:  # noqa: BLE001 - an engine failure is fatal too
            log.critical("apply failed: %s", exc)
            self.on_fatal(exc)
            return
        self.loop.call_soon_threadsafe(self.on_done, job)

    def _persist(self, job: ReadyJob) -> None:
        if job.hard_state is None and not job.entries:
            return
        if failpoints.armed is not None:
            failpoints.hit(BEFORE_SAVE)
        started_s = time.perf_counter()
        self.wal.save(job.hard_state, job.entries, sync=job.must_sync)
        if job.must_sync and self.fsync_seconds is not None:
            self.fsync_seconds.observe(None, time.perf_counter() - started_s)
        if job.must_sync:
            self.synced_writes += 1
            self.synced_entries += len(job.entries)
        if failpoints.armed is not None:
            failpoints.hit(AFTER_SAVE)

    def _apply(self, job: ReadyJob) -> None:
        if not job.committed:
            return
        if failpoints.armed is not None:
            failpoints.hit(BEFORE_APPLY)
        job.results = self.applier.apply(job.committed)
        self.db_size_bytes = self.store.size_bytes()
        if self.applier.compaction_scheduled:
            self.applier.compaction_scheduled = False
            self._compacting = True
        if failpoints.armed is not None:
            failpoints.hit(AFTER_APPLY)
        if self.snapshots is not None:
            last = job.committed[-1]
            job.snapshot_index = self.snapshots.maybe_take(last.term, last.index)
