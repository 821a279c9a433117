"""The node in process: propose/apply, read barriers, restart, snapshot + WAL-tail recovery, and
the etcd#14370 ordering (nothing is applied, so acknowledged, before its WAL write is synced).

Each test starts a real Node (real Raft, WAL, engine) on a tmp_path data dir; no gRPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import glob
import os
from typing import Any

import pytest

from api.etcdserverpb import internal_pb2, rpc_pb2
from server import errors
from server.config import Config
from server.node import Node


def config_for(tmp_path: Any, **overrides: Any) -> Config:
    base = Config(
        name="n1",
        data_dir=str(tmp_path / "data"),
        initial_advertise_peer_urls=("http://127.0.0.1:2380",),
        initial_cluster="n1=http://127.0.0.1:2380",
    )
    return dataclasses.replace(base, **overrides)


def put(key: bytes, value: bytes = b"v", **kw: Any) -> internal_pb2.InternalRequest:
    return internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=value, **kw))


async def started(config: Config) -> Node:
    node = await Node.start(config)
    await asyncio.wait_for(wait_leader(node), 10)
    return node


async def wait_leader(node: Node) -> None:
    became_leader = asyncio.Event()
    node.on_leader_change(lambda leader: became_leader.set() if leader else None)
    if not node.is_leader:
        await became_leader.wait()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_put_then_range_with_headers(tmp_path: Any) -> None:
    """A put is applied and acknowledged with etcd's header; a linearizable range sees it."""

    async def body() -> None:
        node = await started(config_for(tmp_path))
        try:
            response = await node.propose(put(b"foo", b"bar"))
            assert isinstance(response, rpc_pb2.PutResponse)
            assert response.header.revision == 2
            assert response.header.member_id == node.member_id
            assert response.header.cluster_id == node.cluster_id
            assert response.header.raft_term == node.term >= 1
            await node.read_barrier()
            got = node.store.range(rpc_pb2.RangeRequest(key=b"foo"))
            assert [(kv.key, kv.value) for kv in got.kvs] == [(b"foo", b"bar")]
        finally:
            await node.stop()

    run(body())


def test_concurrent_puts_are_batched_and_ordered(tmp_path: Any) -> None:
    """200 concurrent puts get revisions 2..201 exactly once, in fewer WAL saves than puts."""

    async def body() -> None:
        node = await started(config_for(tmp_path))
        saves = []
        original = node.wal.save

        def counting_save(hard_state: Any, entries: Any, *, sync: bool) -> None:
            saves.append(len(entries))
            original(hard_state, entries, sync=sync)

        node.wal.save = counting_save
        try:
            responses = await asyncio.gather(*(node.propose(put(b"k%03d" % i)) for i in range(200)))
            revisions = sorted(r.header.revision for r in responses)
            assert revisions == list(range(2, 202))
            assert len([n for n in saves if n]) < 200
        finally:
            await node.stop()

    run(body())


def test_engine_error_reaches_the_caller_and_batch_goes_on(tmp_path: Any) -> None:
    """A put with an unknown lease fails alone; the puts batched with it are applied."""

    async def body() -> None:
        node = await started(config_for(tmp_path))
        try:
            results = await asyncio.gather(
                node.propose(put(b"a")),
                node.propose(put(b"b", lease=12345)),
                node.propose(put(b"c")),
                return_exceptions=True,
            )
            assert isinstance(results[0], rpc_pb2.PutResponse)
            assert type(results[1]).__name__ == "LeaseNotFoundError"
            assert isinstance(results[2], rpc_pb2.PutResponse)
            assert node.store.revision == 3
        finally:
            await node.stop()

    run(body())


@pytest.mark.parametrize("single_voter_shortcut", [True, False])
def test_read_barriers_are_batched(tmp_path: Any, single_voter_shortcut: bool) -> None:
    """Many concurrent linearizable reads share few ReadIndex requests to Raft; a lone voter
    needs none at all (its commit index is the read index, as Raft would answer)."""

    async def body() -> None:
        node = await started(config_for(tmp_path))
        node.driver.single_voter = single_voter_shortcut
        calls = []
        original = node.driver.raw.read_index

        def counting(ctx: bytes) -> None:
            calls.append(ctx)
            original(ctx)

        node.driver.raw.read_index = counting
        try:
            await node.propose(put(b"x"))
            await asyncio.gather(*(node.read_barrier() for _ in range(100)))
            if single_voter_shortcut:
                assert calls == []
            else:
                assert 1 <= len(calls) <= 3
        finally:
            await node.stop()

    run(body())


def test_restart_keeps_revisions_and_data(tmp_path: Any) -> None:
    """After a clean stop and start, revision, keys and IDs are as before."""
    config = config_for(tmp_path)

    async def first() -> tuple[int, int]:
        node = await started(config)
        for i in range(20):
            await node.propose(put(b"k%d" % i, b"v%d" % i))
        await node.propose(
            internal_pb2.InternalRequest(delete_range=rpc_pb2.DeleteRangeRequest(key=b"k0"))
        )
        ids = (node.member_id, node.cluster_id)
        await node.stop()
        return ids

    async def second(ids: tuple[int, int]) -> None:
        node = await started(config)
        try:
            assert (node.member_id, node.cluster_id) == ids
            assert node.store.revision == 22
            got = node.store.range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l"))
            assert got.count == 19
            response = await node.propose(put(b"new"))
            assert response.header.revision == 23
        finally:
            await node.stop()

    ids = run(first())
    run(second(ids))


@pytest.mark.parametrize("max_snapshots", [2, 0])
def test_recovery_from_snapshot_and_wal_tail(tmp_path: Any, max_snapshots: int) -> None:
    """With snapshot-count 10, 55 writes leave snapshots (purged to max-snapshots; 0 keeps
    them all, as in etcd) and a WAL tail; a node started on that data dir has every write and
    goes on from revision 57."""
    config = config_for(tmp_path, snapshot_count=10, max_snapshots=max_snapshots, max_wals=0)

    async def first() -> int:
        node = await started(config)
        for i in range(55):
            await node.propose(put(b"key%02d" % i, b"%d" % i))
        applied = node.applied_index
        await node.stop()
        return applied

    async def second(applied_before: int) -> None:
        node = await started(config)
        try:
            assert node.applied_index >= applied_before
            got = node.store.range(rpc_pb2.RangeRequest(key=b"key", range_end=b"kez"))
            assert got.count == 55
            assert (await node.propose(put(b"after"))).header.revision == 57
        finally:
            await node.stop()

    applied = run(first())
    snaps = glob.glob(os.path.join(config.data_dir, "member", "snap", "*.snap"))
    assert 1 <= len(snaps) <= 2 if max_snapshots else len(snaps) >= 4
    run(second(applied))


def test_wal_replay_above_consistent_index(tmp_path: Any) -> None:
    """Entries the engine never applied (crash after the WAL fsync, before apply) are applied
    from the WAL at start: the failpoint stops the storage thread right after a save."""
    config = config_for(tmp_path)

    async def first() -> None:
        node = await started(config)
        for i in range(5):
            await node.propose(put(b"a%d" % i))
        # From now on the storage thread saves to the WAL, then dies before applying.
        from wal import failpoints

        def die(name: str) -> None:
            raise SystemExit("simulated crash after WAL save")

        fatal = asyncio.get_running_loop().create_future()
        node.storage.on_fatal = lambda exc: node._loop.call_soon_threadsafe(fatal.set_result, exc)
        failpoints.arm("server.before_apply", die)
        try:
            pending = asyncio.ensure_future(node.propose(put(b"lost-ack")))
            await asyncio.wait_for(fatal, 10)
            assert not pending.done()
            pending.cancel()
        finally:
            failpoints.disarm_all()
        # Close files without the storage thread (it is gone, as in a crash).
        await node.driver.stop_ticking()
        node.wal.close()
        node.store.close()

    async def second() -> None:
        node = await started(config)
        try:
            got = node.store.range(rpc_pb2.RangeRequest(key=b"lost-ack"))
            assert got.count == 1, "the synced entry must be applied at restart"
            assert node.store.revision == 7
        finally:
            await node.stop()

    run(first())
    run(second())


def test_single_member_fsyncs_before_apply(tmp_path: Any) -> None:
    """etcd#14370: every entry applied was first written by a WAL save with sync=True."""

    async def body() -> None:
        node = await started(config_for(tmp_path))
        # Entries saved before the recorder was installed are out of this check.
        synced: set[int] = set(range(node.wal.last_index + 1))
        violations: list[int] = []
        save, apply = node.wal.save, node.applier.apply

        def recording_save(hard_state: Any, entries: Any, *, sync: bool) -> None:
            save(hard_state, entries, sync=sync)
            if sync:
                synced.update(e.index for e in entries)

        def checking_apply(entries: Any) -> Any:
            violations.extend(e.index for e in entries if e.index not in synced)
            return apply(entries)

        node.wal.save = recording_save
        node.applier.apply = checking_apply
        try:
            await asyncio.gather(*(node.propose(put(b"k%d" % i)) for i in range(50)))
            assert node.applied_index >= 50
            assert violations == []
        finally:
            await node.stop()

    run(body())


def test_request_too_large_and_stopped(tmp_path: Any) -> None:
    """Oversized proposals get "request is too large"; after stop, "server stopped"."""

    async def body() -> None:
        node = await started(config_for(tmp_path, max_request_bytes=1024))
        with pytest.raises(errors.RequestTooLargeError):
            await node.propose(put(b"big", b"x" * 2000))
        await node.stop()
        with pytest.raises(errors.StoppedError):
            await node.propose(put(b"late"))

    run(body())


def test_snapshot_file_without_wal_record_is_skipped(tmp_path: Any) -> None:
    """A crash after the .snap file is written but before the WAL's snapshot record: start-up
    falls back to the snapshot the WAL knows (etcd 3.4.23 does the same) and loses nothing."""
    config = config_for(tmp_path, snapshot_count=5)

    async def first() -> None:
        node = await started(config)
        from wal import failpoints

        def die(name: str) -> None:
            raise SystemExit("simulated crash before the WAL snapshot record")

        fatal = asyncio.get_running_loop().create_future()
        node.storage.on_fatal = lambda exc: node._loop.call_soon_threadsafe(fatal.set_result, exc)
        failpoints.arm("wal.before_save_snapshot", die, at_hit=2)
        try:

            async def writer() -> None:
                for i in range(30):
                    await node.propose(put(b"k%02d" % i))

            task = asyncio.ensure_future(writer())
            await asyncio.wait_for(fatal, 10)
        finally:
            failpoints.disarm_all()
        await node.driver.stop_ticking()
        task.cancel()
        node.wal.close()
        node.store.close()

    async def second() -> None:
        node = await started(config)
        try:
            snaps = sorted(os.listdir(os.path.join(config.data_dir, "member", "snap")))
            assert len(snaps) >= 2, snaps
            got = node.store.range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l"))
            # Everything applied before the crash (and what the WAL holds) is there.
            assert got.count >= 10
            response = await node.propose(put(b"after"))
            assert response.header.revision == node.store.revision
        finally:
            await node.stop()

    run(first())
    run(second())


@pytest.mark.slow
def test_startup_time_does_not_grow_with_keys(tmp_path: Any) -> None:
    """Start-up reads the snapshot and the WAL tail only: with 10x the keys (same WAL tail
    length bound), opening the node takes about as long."""
    import time

    def fill_and_time(directory: str, keys: int) -> float:
        config = config_for(tmp_path / directory, snapshot_count=1000)

        async def fill() -> None:
            node = await started(config)
            for first in range(0, keys, 500):
                await asyncio.gather(
                    *(node.propose(put(b"k%07d" % i, b"v" * 64)) for i in range(first, first + 500))
                )
            await node.stop()

        async def reopen() -> float:
            started_s = time.perf_counter()
            node = await started(config)
            elapsed_s = time.perf_counter() - started_s
            assert node.store.revision == keys + 1
            await node.stop()
            return elapsed_s

        run(fill())
        return min(run(reopen()) for _ in range(3))

    small_s = fill_and_time("small", 2_000)
    large_s = fill_and_time("large", 20_000)
    print(f"start-up: 2k keys {small_s * 1000:.0f} ms, 20k keys {large_s * 1000:.0f} ms")
    assert large_s < 3 * small_s + 0.2


def test_stalled_disk_times_out_requests(tmp_path: Any) -> None:
    """While the WAL write hangs, a proposal fails with "request timed out" after the request
    timeout; once the disk is back the node serves again."""
    import threading

    from wal import failpoints

    async def body() -> None:
        node = await started(config_for(tmp_path))
        node.driver.request_timeout_s = 0.3
        disk_back = threading.Event()
        failpoints.arm("server.before_wal_save", lambda name: disk_back.wait(30))
        try:
            with pytest.raises(errors.RequestTimeoutError):
                await node.propose(put(b"slow"))
        finally:
            failpoints.disarm_all()
            disk_back.set()
        response = await node.propose(put(b"fast"))
        assert response.header.revision == 3  # the timed-out put was applied after all
        await node.stop()

    run(body())


def test_alarms_survive_restart(tmp_path: Any) -> None:
    """An activated alarm is still active after a restart, whether its entry sits in the WAL
    tail or before the snapshot (snapshot-count 3), and still gates puts."""
    config = config_for(tmp_path, snapshot_count=3)

    def alarm(action: int) -> internal_pb2.InternalRequest:
        return internal_pb2.InternalRequest(
            alarm=rpc_pb2.AlarmRequest(action=action, memberID=7, alarm=rpc_pb2.AlarmType.NOSPACE)
        )

    async def first() -> None:
        node = await started(config)
        await node.propose(alarm(rpc_pb2.AlarmRequest.ACTIVATE))
        for i in range(10):  # pushes the alarm entry below a snapshot
            await node.propose(
                internal_pb2.InternalRequest(
                    delete_range=rpc_pb2.DeleteRangeRequest(key=b"x%d" % i)
                )
            )
        await node.stop()

    async def second() -> None:
        node = await started(config)
        try:
            assert (7, rpc_pb2.AlarmType.NOSPACE) in node.applier.alarms
            with pytest.raises(errors.NoSpaceError):
                await node.propose(put(b"k"))
            await node.propose(alarm(rpc_pb2.AlarmRequest.DEACTIVATE))
        finally:
            await node.stop()

    async def third() -> None:
        node = await started(config)
        try:
            assert not node.applier.alarms
            assert (await node.propose(put(b"k"))).header.revision == 2
        finally:
            await node.stop()

    run(first())
    run(second())
    run(third())


def test_cancelled_reader_does_not_cancel_its_batch(tmp_path: Any) -> None:
    """Readers share one ReadIndex request: cancelling one of them (its client went away)
    leaves the others' barrier intact."""

    async def body() -> None:
        node = await started(config_for(tmp_path))
        node.driver.single_voter = False  # the shared ReadIndex path
        try:
            await node.propose(put(b"x"))
            readers = [asyncio.ensure_future(node.read_barrier()) for _ in range(3)]
            await asyncio.sleep(0)  # let them all join the same batch
            readers[0].cancel()
            results = await asyncio.gather(*readers, return_exceptions=True)
            assert isinstance(results[0], asyncio.CancelledError)
            assert results[1:] == [None, None]
        finally:
            await node.stop()

    run(body())


def test_lone_voter_read_waits_for_apply(tmp_path: Any) -> None:
    """The lone voter's local read index still waits until what is committed is applied:
    with the apply stalled, a read barrier stays pending; it completes after the apply."""
    import threading

    from wal import failpoints

    async def body() -> None:
        node = await started(config_for(tmp_path))
        try:
            await node.propose(put(b"x"))
            gate = threading.Event()
            failpoints.arm("server.before_apply", lambda name: gate.wait(30))
            try:
                write = asyncio.ensure_future(node.propose(put(b"y")))
                while node.commit_index <= node.applied_index:  # committed, not yet applied
                    await asyncio.sleep(0)
                read = asyncio.ensure_future(node.read_barrier())
                await asyncio.sleep(0)
                assert not read.done()
            finally:
                failpoints.disarm_all()
                gate.set()
            await asyncio.wait_for(asyncio.gather(write, read), 10)
            got = node.store.range(rpc_pb2.RangeRequest(key=b"y"))
            assert got.count == 1
        finally:
            await node.stop()

    run(body())


def test_lone_voter_keeps_leadership(tmp_path: Any) -> None:
    """With check-quorum on (as etcd), a single member stays leader over many election
    timeouts: the ticks are driven by hand, 30 election timeouts' worth."""

    async def body() -> None:
        node = await started(config_for(tmp_path))
        changes: list[bool] = []
        node.on_leader_change(changes.append)
        try:
            for _ in range(300):
                node.driver.raw.tick()
                node.driver.kick()
                await node.propose(put(b"tick"))
            assert node.is_leader and changes == []
        finally:
            await node.stop()

    run(body())


def test_raft_log_compacted_after_snapshot(tmp_path: Any, monkeypatch: Any) -> None:
    """After each snapshot, Raft's in-memory log keeps only the catch-up entries (3 here) and
    records the snapshot, so memory does not grow with the history."""
    import server.node

    monkeypatch.setattr(server.node, "CATCH_UP_ENTRIES", 3)
    config = config_for(tmp_path, snapshot_count=10)

    async def body() -> None:
        node = await started(config)
        try:
            for i in range(40):
                await node.propose(put(b"k%d" % i))
            memory = node.driver.memory
            assert memory.snapshot().index > 10
            assert memory.first_index() > memory.snapshot().index - 5
            assert memory.last_index() - memory.first_index() < 20
        finally:
            await node.stop()

    run(body())


def test_physical_compaction_waits_for_the_background_steps(tmp_path: Any) -> None:
    """Compact then wait_compaction (physical=true): when it returns, no compaction work is
    left in the engine, and writes made meanwhile were applied."""

    async def body() -> None:
        node = await started(config_for(tmp_path))
        try:
            for first in range(0, 3000, 500):
                await asyncio.gather(
                    *(node.propose(put(b"k%d" % (i % 50))) for i in range(first, first + 500))
                )
            compact = internal_pb2.InternalRequest(
                compaction=rpc_pb2.CompactionRequest(revision=2900, physical=True)
            )
            await node.propose(compact)
            writes = asyncio.gather(*(node.propose(put(b"during%d" % i)) for i in range(50)))
            await node.wait_compaction()
            assert not node.store.compaction_pending()
            await writes
            assert node.store.compact_revision == 2900
        finally:
            await node.stop()

    run(body())
