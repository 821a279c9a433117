"""DeleteRange's bulk path (engine/batch.py `_delete`, engine/reader.py `iter_live_raw`).

The bulk path scans raw index records in chunks and writes each chunk's tombstones with putmulti
before it scans on. These
tests check it byte for byte against records built here from the layouts in engine/keys.py (the
way the per-key path writes them), over seeded random stores that mix short keys, long keys
sharing a group, keys with history, deleted keys and leases; and check the response, prev_kvs,
reads at the old revision and the watch events against a dict kept by the test.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from api.etcdserverpb import rpc_pb2 as pb
from api.mvccpb import kv_pb2
from engine import Store, batch, keys

GROUP_A = b"g" * 200  # long keys starting with these 200 bytes share one index group
GROUP_B = b"g" * 199 + b"\x00"  # a group whose escaped prefix holds a 0x00
LEASES = [0, 0, 0, 11, 12, -5]  # mostly none; -5: a negative ID is stored as its u64 form

# A live key in the test's own model: value, create revision, mod revision, version, lease.
Live = dict[bytes, tuple[bytes, int, int, int, int]]


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    s = Store.open(str(tmp_path / "db"), map_size_bytes=1 << 28)
    yield s
    s.close()


def random_key(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return b"s" + rng.randbytes(rng.randrange(1, 6))  # short, may hold 0x00
    if kind == 1:
        return GROUP_A + rng.randbytes(rng.randrange(1, 40))  # long, crowded group
    if kind == 2:
        return GROUP_B + rng.randbytes(rng.randrange(0, 3))  # long (or 200 bytes: short)
    if kind == 3:
        return b"g" + rng.randbytes(rng.randrange(200, 260))  # long, a group of its own
    return b"g" * rng.randrange(1, 201)  # short, sorts among the long groups


def fill(store: Store, rng: random.Random, n_ops: int) -> Live:
    """Random puts (with leases) and single-key deletes; returns the live keys."""
    live: Live = {}
    with store.write_batch() as b:
        for lease in {x for x in LEASES if x}:
            b.lease_grant(lease, 60)
    known: list[bytes] = []
    for _ in range(n_ops):
        with store.write_batch() as b:
            if known and rng.random() < 0.15:
                key = rng.choice(known)
                b.delete_range(pb.DeleteRangeRequest(key=key))
                live.pop(key, None)
                continue
            key = rng.choice(known) if known and rng.random() < 0.3 else random_key(rng)
            known.append(key)
            value = rng.randbytes(rng.randrange(0, 20))
            lease = rng.choice(LEASES)
            rev = b.put(pb.PutRequest(key=key, value=value, lease=lease)).header.revision
            old = live.get(key)
            create, version = (old[1], old[3] + 1) if old else (rev, 1)
            live[key] = (value, create, rev, version, lease)
    return live


def dump(store: Store) -> dict[str, dict[bytes, bytes]]:
    with store.env.begin() as txn:
        return {
            name: dict(txn.cursor(db=db).iternext()) for name, db in store.dbs._asdict().items()
        }


def expected_after(
    before: dict[str, dict[bytes, bytes]], doomed: list[bytes], live: Live, main: int
) -> dict[str, dict[bytes, bytes]]:
    """The tables after deleting `doomed` (in key order) at `main`, built from the layouts."""
    after = {name: dict(table) for name, table in before.items()}
    for sub, key in enumerate(doomed):
        ik = keys.ikey(key)
        after["log"][keys.rev_key(main, sub, True)] = keys.LOG_VALUE.pack(0, 0, 0, len(key)) + key
        tail = key if keys.is_long(key) else b""
        after["idx"][ik + keys.inv(main)] = keys.IDX_VALUE.pack(sub, 0, 0, 0) + tail
        lease = live[key][4]
        if lease:
            del after["lkeys"][keys.u64(lease & keys.MAIN_MAX) + ik]
    if doomed:
        after["meta"][b"rev"] = keys.u64(main)
    return after


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    return key >= start and (end == b"\x00" or key < end)


def kv_tuple(kv: kv_pb2.KeyValue) -> tuple[Any, ...]:
    return (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


RANGE_KINDS = 5


def pick_range(rng: random.Random, live: Live, choice: int) -> tuple[bytes, bytes]:
    """A range of kind `choice`: the prefix of (almost) all keys, from a live key on, one live
    key, inside the crowded long-key group, between two live keys."""
    names = sorted(live)
    if choice == 0:
        return b"g", keys.prefix_end(b"g")
    if choice == 1:
        return rng.choice(names), b"\x00"
    if choice == 2:
        return rng.choice(names), b""
    if choice == 3:
        return GROUP_A + rng.randbytes(1), GROUP_A + rng.randbytes(2)
    lo, hi = sorted(rng.sample(names, 2))
    return lo, hi


CHUNKS_KEYS = (1, 3, batch.DELETE_CHUNK_KEYS)  # chunks of 1 and 3 split long-key groups


@pytest.mark.parametrize("seed", range(len(CHUNKS_KEYS) * RANGE_KINDS))
def test_delete_range_writes_what_the_per_key_layout_says(
    store: Store, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a seeded random store (seed in the test id), one DeleteRange with prev_kv under a
    live watcher: response, prev_kvs, every table byte for byte, reads at the old revision and
    the events (live and replayed) match what the test computes itself. The seed also picks the
    range's kind and the delete's chunk size (every pair of them is covered)."""
    monkeypatch.setattr(batch, "DELETE_CHUNK_KEYS", CHUNKS_KEYS[seed % len(CHUNKS_KEYS)])
    rng = random.Random(seed)
    live = fill(store, rng, 160)
    start, end = pick_range(rng, live, seed % RANGE_KINDS)
    doomed = sorted(k for k in live if in_range(k, start, end))
    old_rev = store.revision
    main = old_rev + 1 if doomed else old_rev
    before = dump(store)
    watcher = store.watch_hub.watch(b"\x00", b"\x00", 0)
    with store.write_batch() as b:
        resp = b.delete_range(pb.DeleteRangeRequest(key=start, range_end=end, prev_kv=True))
    msg = f"seed {seed}, range {start!r}..{end!r}"
    assert resp.deleted == len(doomed), msg
    assert resp.header.revision == main, msg
    assert [kv_tuple(kv) for kv in resp.prev_kvs] == [
        (k, *live[k][:4], live[k][4]) for k in doomed
    ], msg
    assert dump(store) == expected_after(before, doomed, live, main), msg
    got = store.range(pb.RangeRequest(key=b"\x00", range_end=b"\x00", revision=old_rev))
    assert [kv.key for kv in got.kvs] == sorted(live), msg
    for w in (watcher, store.watch_hub.watch(b"\x00", b"\x00", old_rev + 1)):
        events = w.take(10_000)
        assert isinstance(events, list), msg
        assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
            (kv_pb2.Event.DELETE, k, main) for k in doomed
        ], msg
        w.cancel()


@pytest.mark.parametrize("chunk_keys", [1, batch.DELETE_CHUNK_KEYS])
def test_delete_then_put_again_in_one_txn(
    store: Store, chunk_keys: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A txn deletes a range mixing short and long keys (leased) and then puts one of them back
    with another lease: the put starts a new generation at the txn's revision, the tombstones
    and the put take subs in op order, each lease holds exactly its keys, and the old revision
    still reads the old values."""
    monkeypatch.setattr(batch, "DELETE_CHUNK_KEYS", chunk_keys)
    long_a, long_b, short = GROUP_A + b"\x02", GROUP_A + b"\x01", b"gg"
    with store.write_batch() as b:
        b.lease_grant(7, 60)
        b.lease_grant(8, 60)
        b.put(pb.PutRequest(key=long_a, value=b"a", lease=7))  # 2
        b.put(pb.PutRequest(key=long_b, value=b"b"))  # 3
        b.put(pb.PutRequest(key=short, value=b"s", lease=7))  # 4
    txn = pb.TxnRequest(
        success=[
            pb.RequestOp(
                request_delete_range=pb.DeleteRangeRequest(
                    key=b"g", range_end=keys.prefix_end(b"g"), prev_kv=True
                )
            ),
            pb.RequestOp(request_put=pb.PutRequest(key=long_a, value=b"new", lease=8)),
            pb.RequestOp(request_range=pb.RangeRequest(key=b"g", range_end=b"h")),
        ]
    )
    with store.write_batch() as b:
        resp = b.txn(txn)
    dr, _, rr = resp.responses
    assert resp.header.revision == 5
    assert [kv.key for kv in dr.response_delete_range.prev_kvs] == [short, long_b, long_a]
    assert [kv.lease for kv in dr.response_delete_range.prev_kvs] == [7, 0, 7]
    assert [kv_tuple(kv) for kv in rr.response_range.kvs] == [(long_a, b"new", 5, 5, 1, 8)]
    with store.env.begin() as t:
        # Subs follow op order: the three tombstones in key order, then the put.
        tombs = [t.get(keys.rev_key(5, sub, True), db=store.dbs.log) for sub in range(3)]
        assert [r[keys.LOG_VALUE.size :] for r in tombs if r is not None] == [short, long_b, long_a]
        assert t.get(keys.rev_key(5, 3), db=store.dbs.log) is not None
    assert store.lease_ttl_info(7) == (60, [])
    assert store.lease_ttl_info(8) == (60, [long_a])
    old = store.range(pb.RangeRequest(key=b"g", range_end=b"h", revision=4))
    assert [(kv.key, kv.value) for kv in old.kvs] == [(short, b"s"), (long_b, b"b"), (long_a, b"a")]
    now = store.range(pb.RangeRequest(key=b"g", range_end=b"h"))
    assert [kv_tuple(kv) for kv in now.kvs] == [(long_a, b"new", 5, 5, 1, 8)]


def test_chunks_lose_no_successor_key(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one key per chunk, the next chunk starts at the immediate successor of the last
    deleted key (key + 0x00): keys that are each other's successors, short and long, all go."""
    monkeypatch.setattr(batch, "DELETE_CHUNK_KEYS", 1)
    names = [base + b"\x00" * n for base in (b"k", GROUP_A + b"k") for n in range(3)]
    with store.write_batch() as b:
        for name in names:
            b.put(pb.PutRequest(key=name, value=b"v"))
    with store.write_batch() as b:
        resp = b.delete_range(pb.DeleteRangeRequest(key=b"\x00", range_end=b"\x00", prev_kv=True))
    assert [kv.key for kv in resp.prev_kvs] == sorted(names)
    assert resp.deleted == len(names)
    assert store.range(pb.RangeRequest(key=b"\x00", range_end=b"\x00")).count == 0


def test_watch_ring_splits_a_batch_by_revision(store: Store) -> None:
    """One batch of several revisions (a put, a big delete, a put) reaches the watch ring as
    one entry per revision: a watcher starting at each revision gets exactly that revision's
    events and the later ones, from the ring (no replay from LMDB)."""
    names = [b"k%03d" % i for i in range(50)]
    with store.write_batch() as b:
        for name in names:
            b.put(pb.PutRequest(key=name, value=b"v"))
    first = store.revision + 1
    live = store.watch_hub.watch(b"\x00", b"\x00", 0)
    with store.write_batch() as b:
        b.put(pb.PutRequest(key=b"a", value=b"1"))  # first
        b.delete_range(pb.DeleteRangeRequest(key=b"k", range_end=b"l"))  # first + 1
        b.put(pb.PutRequest(key=b"z", value=b"2"))  # first + 2
    expected = [(kv_pb2.Event.PUT, b"a", first)]
    expected += [(kv_pb2.Event.DELETE, name, first + 1) for name in names]
    expected += [(kv_pb2.Event.PUT, b"z", first + 2)]
    assert [rev for rev, _ in store.watch_hub._ring] == [first, first + 1, first + 2]
    for skip, start in ((0, first), (1, first + 1), (51, first + 2)):
        w = store.watch_hub.watch(b"\x00", b"\x00", start)
        events = w.take(1000)
        assert isinstance(events, list)
        assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == expected[skip:]
        w.cancel()
    live.cancel()


@pytest.mark.parametrize("seed", range(3))
def test_lease_revoke_writes_what_the_per_key_layout_says(
    store: Store, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease revoke deletes the lease's keys through the same chunked path: every table
    byte for byte as the layouts say (chunks of 3 here), the lease record gone, and the
    events in key order at one revision (seed in the test id)."""
    monkeypatch.setattr(batch, "DELETE_CHUNK_KEYS", 3)
    rng = random.Random(seed)
    live = fill(store, rng, 120)
    doomed = sorted(k for k, kv in live.items() if kv[4] == 11)
    assert doomed, f"seed {seed}: no key holds lease 11"
    main = store.revision + 1
    before = dump(store)
    watcher = store.watch_hub.watch(b"\x00", b"\x00", 0)
    with store.write_batch() as b:
        b.lease_revoke(11)
    expected = expected_after(before, doomed, live, main)
    del expected["lease"][keys.u64(11)]
    assert dump(store) == expected, f"seed {seed}"
    events = watcher.take(10_000)
    assert isinstance(events, list)
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
        (kv_pb2.Event.DELETE, k, main) for k in doomed
    ], f"seed {seed}"
    watcher.cancel()
