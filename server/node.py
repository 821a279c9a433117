"""The node: what the gRPC services see of Raft, the WAL and the engine.

Theory of operation: `Node.start(config)` opens the data dir (server/recovery.py), starts the
storage thread (server/storage_thread.py) and the Raft driver (server/raft_driver.py), and, on
a single-voter cluster, campaigns at once instead of waiting an election timeout. Handlers call
`propose()` for writes (the reply comes back after WAL fsync and apply) and `read_barrier()`
before linearizable reads; serializable reads go to `store` directly. The node itself only
wires these collaborators together and fills response headers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from api.etcdserverpb import internal_pb2, rpc_pb2

from . import entry, errors
from .applier import Applier
from .config import Config
from .raft_driver import RaftDriver
from .recovery import Recovered, encode_snapshot_data, open_node_storage
from .storage_thread import SnapshotPolicy, StorageThread

log = logging.getLogger(__name__)

# Entries kept in Raft's memory after a snapshot, for followers slightly behind (etcd's
# SnapshotCatchUpEntries).
CATCH_UP_ENTRIES = 5000


DEFAULT_SNAPSHOT_COUNT = 100_000

# The cached database size lags by one batch at most; this margin covers what a batch adds.
QUOTA_SLACK_BYTES = 64 * 1024 * 1024


def _fatal(exc: BaseException) -> None:
    log.critical("fatal storage error, exiting: %r", exc)
    os._exit(1)


class Node:
    def __init__(self, config: Config, rec: Recovered, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.store = rec.store
        self.wal = rec.wal
        self.snapshotter = rec.snapshotter
        self.identity = rec.identity
        self.cluster_id = rec.identity.cluster_id
        self.member_id = rec.identity.member_id
        self.name = rec.identity.name
        self._rec = rec
        self._loop = loop
        # Request IDs as etcd's idutil makes them: member bits, start time, then a counter.
        prefix = (self.member_id & 0xFFFF) << 48
        start = (int(time.time() * 1000) & 0xFFFFFFFFFF) << 8
        self._ids = itertools.count(prefix | start)
        self.driver = RaftDriver(
            rec.raw_node,
            rec.memory,
            None,
            loop,
            applied_index=rec.applied_index,
            tick_interval_s=config.heartbeat_interval_ms / 1000,
            on_snapshot=self._compact_raft_log,
            on_conf_change=self._apply_conf_change,
            # etcd's: 5 s plus two election timeouts.
            request_timeout_s=5.0 + 2 * config.election_timeout_ms / 1000,
        )
        self.applier = Applier(rec.store, self.member_id, self.cluster_id)
        self.applier.alarms.update(rec.alarms)
        self.storage = StorageThread(
            rec.wal,
            self.applier,
            loop,
            self.driver.on_job_done,
            snapshots=(
                SnapshotPolicy(
                    # etcd: --snapshot-count 0 means its default.
                    config.snapshot_count or DEFAULT_SNAPSHOT_COUNT,
                    self._take_snapshot,
                    rec.snapshot_index,
                )
                if rec.snapshotter is not None
                else None
            ),
            on_fatal=_fatal,
        )
        self.driver.storage = self.storage
        self.driver.single_voter = len(rec.identity.members) == 1
        self._stopped = False
        # Held by long engine reads in worker threads (hash, snapshot copy) and by defragment,
        # which swaps the engine's file under them.
        self.backend_swap_lock = asyncio.Lock()

    @classmethod
    async def start(
        cls, config: Config, *, fatal: Callable[[BaseException], None] | None = None
    ) -> Node:
        loop = asyncio.get_running_loop()
        rec = await loop.run_in_executor(None, open_node_storage, config)
        node = cls(config, rec, loop)
        if fatal is not None:
            node.storage.on_fatal = fatal
        try:
            from . import metrics

            node.storage.fsync_seconds = metrics.WAL_FSYNC_SECONDS
        except ImportError:
            pass
        node.storage.start()
        node.driver.start()
        if len(rec.identity.members) == 1:
            rec.raw_node.campaign()
            node.driver.kick()
        else:
            log.warning(
                "initial cluster has %d members but this build has no peer transport yet: "
                "no leader can be elected",
                len(rec.identity.members),
            )
        return node

    async def stop(self) -> None:
        """Answer or fail what is in flight, sync and close the WAL and the engine."""
        if self._stopped:
            return
        self._stopped = True
        await self.driver.stop()
        await self._loop.run_in_executor(None, self.storage.stop)
        await self._loop.run_in_executor(None, self._close_files)

    def _close_files(self) -> None:
        self.wal.close()
        self.store.close()

    # -- what services use -----------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.driver.is_leader

    @property
    def term(self) -> int:
        return self.driver.term

    @property
    def leader_id(self) -> int:
        return self.driver.leader_id

    @property
    def applied_index(self) -> int:
        return self.driver.applied_index

    @property
    def commit_index(self) -> int:
        return self.driver.commit_index

    def on_leader_change(self, callback: Callable[[bool], None]) -> None:
        self.driver.on_leader_change(callback)

    def next_id(self) -> int:
        return next(self._ids)

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.store.revision if revision is None else revision,
            raft_term=self.driver.term,
        )

    async def propose(self, request: internal_pb2.InternalRequest) -> Any:
        """Through Raft, WAL fsync and apply; the response, or the typed error raised."""
        request_id = self.next_id()
        request.header.ID = request_id
        data = request.SerializeToString()
        if len(data) > self.config.max_request_bytes:
            raise errors.RequestTooLargeError()
        outcome = await self.driver.propose(request_id, data)
        return outcome

    async def propose_op(self, field: str, message: Any) -> Any:
        """propose() for InternalRequest(**{field: message}), without copying `message` into a
        new InternalRequest: the entry bytes are the header and the message's own encoding,
        framed as that InternalRequest would be (the hot path of Put/DeleteRange/Txn)."""
        request_id = self.next_id()
        data = entry.frame(field, request_id, message.SerializeToString())
        if len(data) > self.config.max_request_bytes:
            raise errors.RequestTooLargeError()
        return await self.driver.propose(
            request_id, data, may_run_long=_deletes_a_range(field, message)
        )

    async def read_barrier(self) -> None:
        await self.driver.read_barrier()

    async def check_quota(self, request: Any) -> None:
        """etcd's quota rule before proposing a Put, Txn or LeaseGrant: if it could exceed the
        backend quota, raise the NOSPACE alarm (through Raft) and fail with NoSpaceError."""
        quota = self.store.quota_bytes
        if quota < 0 or self.storage.db_size_bytes + request.ByteSize() + QUOTA_SLACK_BYTES < quota:
            return  # far from the quota: skip the engine's exact check (two LMDB stat calls)
        try:
            self.store.check_quota(request)
        except Exception as exc:
            if type(exc).__name__ != "NoSpaceError":
                raise
            if (self.member_id, rpc_pb2.AlarmType.NOSPACE) not in self.applier.alarms:
                alarm = rpc_pb2.AlarmRequest(
                    action=rpc_pb2.AlarmRequest.ACTIVATE,
                    memberID=self.member_id,
                    alarm=rpc_pb2.AlarmType.NOSPACE,
                )
                await self.propose(internal_pb2.InternalRequest(alarm=alarm))
            raise

    async def defragment(self) -> None:
        """Rewrite the engine file. No engine read or write may run meanwhile: the storage
        thread is parked and the swap runs on the loop, which blocks every handler (etcd also
        blocks the member during a defragment)."""
        parked = threading.Event()
        resume = threading.Event()

        def park() -> None:
            parked.set()
            resume.wait()

        async with self.backend_swap_lock:
            await self._defragment_parked(parked, resume, park)

    async def _defragment_parked(
        self, parked: threading.Event, resume: threading.Event, park: Callable[[], None]
    ) -> None:
        held = self.storage.call(park)
        try:
            await self._loop.run_in_executor(None, parked.wait)
            self.store.defragment()
        finally:
            resume.set()  # also when cancelled: the storage thread must never stay parked
        await held

    async def txn_read(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """A read-only Txn without Raft or the WAL: evaluated by the engine in a write batch
        that changes nothing, on the storage thread (after every batch already applied)."""
        store = self.store

        def evaluate() -> Any:
            with store.write_batch(sync=False) as batch:
                return batch.txn(request)

        return await self.storage.call(evaluate)

    async def wait_compaction(self) -> None:
        """Wait until the scheduled compaction has deleted everything (Compact physical=true)."""
        await self.storage.when_compacted()

    def run_on_storage(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `fn` on the storage thread (engine writes, defragment), ordered with applies."""
        return self.storage.call(fn)

    # -- snapshots (storage thread), log compaction and membership (loop) ---------------------
    def _take_snapshot(self, term: int, index: int) -> None:
        sync = getattr(self.store, "sync", None)
        if sync is not None:
            sync()  # the engine must hold everything up to `index` before the WAL lets it go
        voters, learners = self._conf_lists()
        alarms = sorted(self.applier.alarms)
        self.snapshotter.save(term, index, encode_snapshot_data(voters, learners, alarms))
        from wal import SnapshotMarker

        self.wal.save_snapshot(SnapshotMarker(index, term))
        # etcd's 0 means "keep them all" for both.
        if self.config.max_wals > 0:
            self.wal.release_to(index, keep=self.config.max_wals)
        if self.config.max_snapshots > 0:
            self.snapshotter.purge(keep=self.config.max_snapshots)
        log.info("snapshot at index %d (term %d)", index, term)

    def _conf_lists(self) -> tuple[list[int], list[int]]:
        return [m[0] for m in self.identity.members], []

    def _compact_raft_log(self, index: int) -> None:
        """After a snapshot at `index` (applied): Raft's storage records it, so a follower
        behind the compacted log gets a snapshot, then drops all but the catch-up entries."""
        import raft

        memory = self._rec.memory
        voters, learners = self._conf_lists()
        conf = raft.ConfState(voters=tuple(voters), learners=tuple(learners))
        if index > memory.snapshot().index:
            memory.create_snapshot(index, conf, encode_snapshot_data(voters, learners, []))
        compact_to = index - CATCH_UP_ENTRIES
        if compact_to > memory.first_index():
            memory.compact(compact_to)

    def _apply_conf_change(self, entry: Any) -> None:
        from raft import codec

        if entry.data:
            self._rec.raw_node.apply_conf_change(codec.decode_conf_change(entry.data))


def _deletes_a_range(field: str, message: Any) -> bool:
    """Whether a KV request may delete a range of keys, whose apply time grows with the keys
    deleted rather than with the request's size."""
    if field == "delete_range":
        return bool(message.range_end)
    if field == "txn":
        return any(
            op.HasField("request_delete_range") and op.request_delete_range.range_end
            for ops in (message.success, message.failure)
            for op in ops
        )
    return False
