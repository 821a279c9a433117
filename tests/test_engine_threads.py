"""Threads: the writer thread commits while a watcher thread drains events and a reader thread
reads; the watcher gets every event exactly once and in order, readers always see a committed
state (all keys of a batch or none), and nobody waits on anybody (no sleeps: waits are on
events with deadlines)."""

from __future__ import annotations

import threading

from api.etcdserverpb import rpc_pb2 as pb
from engine import Compacted, Store

BATCHES = 300
KEYS_PER_BATCH = 5


def test_concurrent_writer_watcher_reader(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = Store.open(str(tmp_path / "db"))
    store.watch_hub.ring_events_max = 64  # the watcher will fall behind the ring at times
    wake = threading.Event()
    w = store.watch_hub.watch(b"k", b"l", 0, notify=wake.set)
    got: list[tuple[bytes, int]] = []
    errors: list[str] = []
    done = threading.Event()
    final_rev = 1 + BATCHES

    def watcher() -> None:
        while not got or got[-1][1] < final_rev:
            if not wake.wait(timeout=30):
                errors.append("watcher starved")
                return
            wake.clear()
            while evs := w.take(17):
                assert not isinstance(evs, Compacted)
                got.extend((e.kv.key, e.kv.mod_revision) for e in evs)

    def reader() -> None:
        req = pb.RangeRequest(key=b"k", range_end=b"l")
        while not done.is_set():
            r = store.range(req)
            if r.count % KEYS_PER_BATCH:
                errors.append(f"torn read: {r.count} keys at revision {r.header.revision}")
                return

    threads = [threading.Thread(target=watcher), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for i in range(BATCHES):
        with store.write_batch(sync=False) as b:
            b.txn(
                pb.TxnRequest(
                    success=[
                        pb.RequestOp(request_put=pb.PutRequest(key=b"k%04d-%d" % (i, j)))
                        for j in range(KEYS_PER_BATCH)
                    ]
                )
            )
    done.set()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert not errors, errors
    expected = [
        (b"k%04d-%d" % (i, j), i + 2) for i in range(BATCHES) for j in range(KEYS_PER_BATCH)
    ]
    assert got == expected
    store.close()
