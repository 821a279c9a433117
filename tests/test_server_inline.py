"""StorageThread.run_inline: the loop runs a Ready itself only while the storage thread is idle.

Checked with a fake WAL and applier that log which thread did what, in which order: an inline
job persists (fsync) before it applies, on the caller's thread, and reports done at once; with
an item queued or running on the thread, run_inline does nothing and says so; idle work the
inline job leaves (the WAL's zero-fill) is picked up by the thread; and a fatal WAL error
inline is reported through on_fatal without on_done. Waits use events with deadlines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from server.storage_thread import ReadyJob, StorageThread

DEADLINE_S = 10.0


class FakeStore:
    def size_bytes(self) -> int:
        return 0

    def compaction_pending(self) -> bool:
        return False


class FakeWAL:
    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log
        self.fail = False
        self.unprepared = 0  # chunks of zero-fill owed
        self.prepared = threading.Event()

    def save(self, hard_state: Any, entries: Any, *, sync: bool) -> None:
        if self.fail:
            raise OSError("disk on fire")
        self.log.append(("save+fsync" if sync else "save", threading.get_ident()))
        self.unprepared = 2

    def needs_prepare(self) -> bool:
        return self.unprepared > 0

    def prepare(self) -> bool:
        self.log.append(("prepare", threading.get_ident()))
        self.unprepared -= 1
        if not self.unprepared:
            self.prepared.set()
        return self.unprepared > 0


class FakeApplier:
    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log
        self.store = FakeStore()
        self.compaction_scheduled = False

    def apply(self, committed: Any) -> list[Any]:
        self.log.append(("apply", threading.get_ident()))
        return [(e, "ok") for e in committed]


def make(loop: asyncio.AbstractEventLoop) -> tuple[StorageThread, list[Any], list[Any], Any]:
    log: list[tuple[str, int]] = []
    done: list[ReadyJob] = []
    fatal: list[BaseException] = []
    st = StorageThread(FakeWAL(log), FakeApplier(log), loop, done.append, on_fatal=fatal.append)  # type: ignore[arg-type]
    return st, done, fatal, log


async def wait_for(loop: asyncio.AbstractEventLoop, condition: Any) -> None:
    """Yields to the loop and the thread pool until `condition()` holds, up to the deadline."""
    deadline_s = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline_s, "condition not met before the deadline"
        await loop.run_in_executor(None, lambda: None)


def job(n: int) -> ReadyJob:
    return ReadyJob(hard_state=None, entries=[n], must_sync=True, committed=[n])


def test_inline_runs_on_the_caller_persist_then_apply() -> None:
    """Idle thread: run_inline returns True, the fsync'd save precedes the apply, both on the
    calling thread, and on_done has the job (with its results) before run_inline returns."""

    async def main() -> None:
        st, done, fatal, log = make(asyncio.get_running_loop())
        st.start()
        try:
            j = job(7)
            assert st.run_inline(j)
            me = threading.get_ident()
            assert log[:2] == [("save+fsync", me), ("apply", me)]
            assert done == [j] and j.results == [(7, "ok")] and not fatal
        finally:
            await asyncio.get_running_loop().run_in_executor(None, st.stop)

    asyncio.run(main())


def test_inline_refused_while_the_thread_has_work_and_order_kept() -> None:
    """A call job parked on the thread: run_inline does nothing and returns False; the job
    submitted instead runs on the thread after the parked call, and is reported through the
    loop; once all is finished, inline works again."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        st, done, fatal, log = make(loop)
        st.start()
        entered, release = threading.Event(), threading.Event()

        def park() -> str:
            entered.set()
            assert release.wait(DEADLINE_S)
            log.append(("call", threading.get_ident()))
            return "parked"

        try:
            parked = st.call(park)
            assert await loop.run_in_executor(None, entered.wait, DEADLINE_S)
            j = job(1)
            assert not st.run_inline(j)
            assert not [e for e in log if e[0] != "call"] and not done
            st.submit(j)
            release.set()
            assert await parked == "parked"
            await wait_for(loop, lambda: bool(done))
            assert done == [j]
            names = [name for name, _ in log if name != "prepare"]
            assert names[:3] == ["call", "save+fsync", "apply"]
            assert all(tid != threading.get_ident() for name, tid in log[:3])
            await loop.run_in_executor(None, st.wal.prepared.wait, DEADLINE_S)
            # Everything finished: the loop may run the next one itself.
            await wait_for(loop, lambda: st._submitted == st._finished)
            assert st.run_inline(job(2)) and done[-1].results == [(2, "ok")]
            assert not fatal
        finally:
            release.set()
            await loop.run_in_executor(None, st.stop)

    asyncio.run(main())


def test_inline_leaves_zero_fill_to_the_thread() -> None:
    """The WAL wants preparing after an inline save: the thread is woken and prepares it (on
    its own thread), not the loop."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        st, done, fatal, log = make(loop)
        st.start()
        try:
            assert st.run_inline(job(3))
            assert await loop.run_in_executor(None, st.wal.prepared.wait, DEADLINE_S)
            preparers = {tid for name, tid in log if name == "prepare"}
            assert preparers and threading.get_ident() not in preparers
        finally:
            await loop.run_in_executor(None, st.stop)

    asyncio.run(main())


def test_inline_fatal_wal_error_reports_no_done() -> None:
    """A failed WAL save inline goes to on_fatal; nothing is applied or reported done."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        st, done, fatal, log = make(loop)
        st.start()
        try:
            st.wal.fail = True
            assert st.run_inline(job(4))
            assert len(fatal) == 1 and isinstance(fatal[0], OSError)
            assert not done and not [e for e in log if e[0] == "apply"]
        finally:
            await loop.run_in_executor(None, st.stop)

    asyncio.run(main())


def record_ways(node: Any) -> list[str]:
    """Wraps the node's storage thread so that each Ready's way is recorded: "inline",
    "refused" (inline was tried, the thread was busy) or "thread"."""
    ways: list[str] = []
    run_inline, submit = node.storage.run_inline, node.storage.submit

    def counted_inline(job: ReadyJob) -> bool:
        done = run_inline(job)
        ways.append("inline" if done else "refused")
        return done

    def counted_submit(job: ReadyJob) -> None:
        ways.append("thread")
        submit(job)

    node.storage.run_inline = counted_inline
    node.storage.submit = counted_submit
    return ways


def test_node_inlines_a_lone_client_not_concurrent_ones(tmp_path: Any) -> None:
    """A real node: sequential puts are written by the loop itself (every Ready inline);
    then 16 concurrent puts overlap, and from there Readies go to the storage thread, in
    batches, while the overlap window lasts (every put still applied, in order)."""
    from tests.test_server_node import config_for, put, started

    async def body() -> None:
        node = await started(config_for(tmp_path))
        ways = record_ways(node)
        try:
            await wait_for(asyncio.get_running_loop(), lambda: node.wal.needs_prepare() is False)
            for i in range(20):
                await node.propose(put(b"seq%d" % i))
            assert ways and set(ways) == {"inline"}, ways
            ways.clear()
            responses = await asyncio.gather(*(node.propose(put(b"c%d" % i)) for i in range(16)))
            assert "inline" not in ways and "thread" in ways, ways
            assert len(ways) < 16, "concurrent puts share Readies (group commit)"
            revisions = sorted(r.header.revision for r in responses)
            assert revisions == list(range(revisions[0], revisions[0] + 16))
            if time.monotonic() < node.driver._overlap_until_s:
                ways.clear()
                await node.propose(put(b"after"))
                assert ways == ["thread"], "still inside the overlap window"
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_node_never_inlines_a_range_delete(tmp_path: Any) -> None:
    """A lone client's range delete (or a txn holding one) goes to the storage thread, since
    its apply time grows with the keys it deletes; a lone single-key delete and put stay
    inline. Every delete is applied."""
    from api.etcdserverpb import rpc_pb2
    from tests.test_server_node import config_for, put, started

    async def body() -> None:
        node = await started(config_for(tmp_path))
        ways = record_ways(node)

        async def settle() -> None:
            # No overlap window left over from the request before, and the WAL prepared.
            await wait_for(
                asyncio.get_running_loop(),
                lambda: (
                    time.monotonic() >= node.driver._overlap_until_s
                    and node.wal.needs_prepare() is False
                ),
            )
            ways.clear()

        try:
            for i in range(10):
                await node.propose(put(b"k%d" % i))
            await settle()
            one = rpc_pb2.DeleteRangeRequest(key=b"k0")
            assert (await node.propose_op("delete_range", one)).deleted == 1
            assert ways == ["inline"]
            await settle()
            some = rpc_pb2.DeleteRangeRequest(key=b"k1", range_end=b"k5")
            assert (await node.propose_op("delete_range", some)).deleted == 4
            assert ways == ["thread"]
            await settle()
            op = rpc_pb2.RequestOp(
                request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"k", range_end=b"l")
            )
            txn = rpc_pb2.TxnRequest(success=[op])
            response = await node.propose_op("txn", txn)
            assert response.responses[0].response_delete_range.deleted == 5
            assert ways == ["thread"]
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(body(), 60))
