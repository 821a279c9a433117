"""snapshot/: .snap files (round trip, corrupt file fallback, purge, crash safety) and the
backend stream and restore (consistent under concurrent writes, SHA-256 trailer, reset
consistent index, history and leases kept)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading

import pytest

from api.etcdserverpb import rpc_pb2
from engine import Store
from snapshot import Snapshotter, backend, errors
from snapshot.snapshotter import snap_name
from tests.wal_fakefs import Crash, FakeFS


def test_save_load_newest(tmp_path) -> None:
    """load() returns the newest snapshot; names are <term>-<index>.snap."""
    snaps = Snapshotter(str(tmp_path / "snap"))
    assert snaps.load() is None
    snaps.save(1, 10, b"ten")
    snaps.save(2, 30, b"thirty")
    snaps.save(2, 20, b"twenty")
    assert snaps.load() == (2, 30, b"thirty")
    assert snap_name(2, 30) in os.listdir(tmp_path / "snap")
    assert snaps.load(acceptable={(2, 20), (1, 10)}) == (2, 20, b"twenty")


@pytest.mark.parametrize("where", ["header", "payload", "truncated"])
def test_corrupt_snapshot_falls_back(tmp_path, where: str) -> None:
    """A damaged newest snapshot is renamed .broken and the next older valid one is used."""
    d = tmp_path / "snap"
    snaps = Snapshotter(str(d))
    snaps.save(1, 10, b"older" * 100)
    snaps.save(1, 20, b"newer" * 100)
    path = d / snap_name(1, 20)
    data = bytearray(path.read_bytes())
    if where == "header":
        data[5] ^= 0x10
    elif where == "payload":
        data[300] ^= 0x01
    else:
        del data[-7:]
    path.write_bytes(bytes(data))
    assert snaps.load() == (1, 10, b"older" * 100)
    assert (d / (snap_name(1, 20) + ".broken")).exists() and not path.exists()


def test_purge_keeps_newest(tmp_path) -> None:
    """purge keeps the newest N snapshots and removes stray temporary files."""
    d = tmp_path / "snap"
    snaps = Snapshotter(str(d))
    for i in range(1, 9):
        snaps.save(1, i * 10, b"x")
    (d / (snap_name(1, 99) + ".tmp")).write_bytes(b"half")
    snaps.purge(keep=3)
    assert sorted(os.listdir(d)) == [snap_name(1, i * 10) for i in (6, 7, 8)]


def test_crash_during_save_keeps_a_valid_snapshot() -> None:
    """A crash at any step of save() leaves the previous snapshot or the new one, never a
    damaged file that load() would return, over seeded crash points."""
    outcomes = set()
    for crash_at in range(1, 12):
        for seed in range(20):
            fs = FakeFS()
            fs.makedirs("/data/member/snap")
            snaps = Snapshotter("/data/member/snap", fs=fs)
            snaps.save(1, 10, b"old" * 300)
            fs.crash_at = fs.steps + crash_at
            try:
                snaps.save(2, 20, b"new" * 300)
            except Crash:
                fs.crash(random.Random(seed))
            fs.crash_at = None
            got = Snapshotter("/data/member/snap", fs=fs).load()
            assert got in ((1, 10, b"old" * 300), (2, 20, b"new" * 300)), (crash_at, seed)
            outcomes.add(got[1] if got else None)
    assert outcomes == {10, 20}


def _put(store: Store, pairs: list[tuple[bytes, bytes]], lease: int = 0) -> None:
    with store.write_batch() as b:
        for k, v in pairs:
            b.put(rpc_pb2.PutRequest(key=k, value=v, lease=lease))


def _all(store: Store) -> dict[bytes, bytes]:
    resp = store.range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"))
    return {kv.key: kv.value for kv in resp.kvs}


def test_stream_and_restore_round_trip(tmp_path) -> None:
    """A streamed copy ends with the SHA-256 of its bytes; restoring it gives the same keys,
    revision, history and leases, with the consistent index reset to 0."""
    store = Store.open(str(tmp_path / "src"))
    try:
        with store.write_batch() as b:
            b.lease_grant(7, 60)
            b.set_consistent_index(42)
        _put(store, [(b"a", b"1"), (b"b", b"2")], lease=7)
        _put(store, [(b"a", b"3")])
        chunks = list(backend.stream(store.env, chunk_bytes=4096))
        expected_keys, expected_rev = _all(store), store.revision
    finally:
        store.close()
    body, trailer = b"".join(chunks[:-1]), chunks[-1]
    assert trailer == hashlib.sha256(body).digest()
    assert all(len(c) == 4096 for c in chunks[:-2])
    snap = tmp_path / "db.snap"
    snap.write_bytes(body + trailer)
    assert snap.stat().st_size % 512 == 32
    backend.restore(str(snap), str(tmp_path / "restored"))
    restored = Store.open(str(tmp_path / "restored" / "member" / "db"))
    try:
        assert _all(restored) == expected_keys and restored.revision == expected_rev
        assert restored.consistent_index == 0
        assert restored.leases() == [(7, 60)]
        old = restored.range(rpc_pb2.RangeRequest(key=b"a", revision=expected_rev - 1))
        assert old.kvs[0].value == b"1", "history survives the restore"
    finally:
        restored.close()


def test_stream_is_consistent_under_writes(tmp_path) -> None:
    """While a writer commits pairs of keys in one batch each, a streamed copy always holds
    both keys of a pair or neither: one consistent state."""
    store = Store.open(str(tmp_path / "src"))
    stop = threading.Event()
    under_way = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 50_000:
            _put(store, [(b"x/%06d" % i, b"v"), (b"y/%06d" % i, b"v")])
            i += 1
            if i == 100:
                under_way.set()

    _put(store, [(b"pad/%d" % i, b"p" * 500) for i in range(2000)])
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert under_way.wait(timeout=30), "the writer never got going"
        snap = tmp_path / "db.snap"
        backend.save(store.env, str(snap), chunk_bytes=8192)
    finally:
        stop.set()
        thread.join()
    store.close()
    backend.restore(str(snap), str(tmp_path / "restored"))
    copy = Store.open(str(tmp_path / "restored" / "member" / "db"))
    try:
        keys = _all(copy)
    finally:
        copy.close()
    xs = {k[2:] for k in keys if k.startswith(b"x/")}
    ys = {k[2:] for k in keys if k.startswith(b"y/")}
    assert xs == ys and len([k for k in keys if k.startswith(b"pad/")]) == 2000


def test_restore_refuses_bad_hash_and_missing_hash(tmp_path) -> None:
    """A damaged copy fails the SHA-256 check and leaves no member directory; a copy without
    a trailer needs skip_hash_check; an existing member directory is never overwritten."""
    store = Store.open(str(tmp_path / "src"))
    _put(store, [(b"k", b"v")])
    chunks = list(backend.stream(store.env))
    store.close()
    body = bytearray(b"".join(chunks[:-1]))
    body[len(body) // 2] ^= 1
    bad = tmp_path / "bad.snap"
    bad.write_bytes(bytes(body) + chunks[-1])
    with pytest.raises(errors.HashMismatchError):
        backend.restore(str(bad), str(tmp_path / "r1"))
    assert not (tmp_path / "r1" / "member").exists()
    bare = tmp_path / "bare.snap"
    bare.write_bytes(b"".join(chunks[:-1]))
    with pytest.raises(errors.HashMismatchError):
        backend.restore(str(bare), str(tmp_path / "r2"))
    backend.restore(str(bare), str(tmp_path / "r2"), skip_hash_check=True)
    with pytest.raises(errors.DataDirExistsError):
        backend.restore(str(bare), str(tmp_path / "r2"), skip_hash_check=True)


def test_stream_closed_early_stops_the_copy(tmp_path) -> None:
    """Abandoning a stream after one chunk ends the copy thread (no hang, no leak)."""
    store = Store.open(str(tmp_path / "src"))
    _put(store, [(b"k%d" % i, os.urandom(200)) for i in range(3000)])
    before = threading.active_count()
    it = backend.stream(store.env, chunk_bytes=1024)
    assert len(next(it)) == 1024
    it.close()  # type: ignore[attr-defined]
    assert threading.active_count() == before
    store.close()


def test_snapshot_file_bit_flips_never_load(tmp_path) -> None:
    """Every single-byte change of a .snap file is detected (CRC over header and payload)."""
    seed = 99
    rng = random.Random(seed)
    d = tmp_path / "snap"
    snaps = Snapshotter(str(d))
    snaps.save(3, 30, rng.randbytes(2000))
    path = d / snap_name(3, 30)
    pristine = path.read_bytes()
    for trial in range(80):
        offset = rng.randrange(len(pristine))
        damaged = bytearray(pristine)
        damaged[offset] ^= 1 + rng.randrange(255)
        path.write_bytes(bytes(damaged))
        assert snaps.load() is None, f"seed {seed} trial {trial} offset {offset}"
        pathlib.Path(str(path) + ".broken").rename(path)


CHILD = """
import sys
from snapshot import Snapshotter
snaps = Snapshotter(sys.argv[1])
for i in range(1, 50):
    snaps.save(1, i, b"snap %d " % i * 100)
    print(i, flush=True)
"""


@pytest.mark.parametrize(
    "point",
    [
        "snapshot.before_save",
        "snapshot.before_fsync",
        "snapshot.before_rename",
        "snapshot.after_save",
    ],
)
def test_kill_at_each_snapshot_failpoint(tmp_path, point: str) -> None:
    """A child saving snapshots is SIGKILLed at the 3rd hit of each point; load() then gives
    the last snapshot it reported, or the one it was writing, intact."""
    root = pathlib.Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root), PETRA_FAILPOINTS=f"{point}:kill@3")
    d = str(tmp_path / "snap")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, d], env=env, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    reported = max(map(int, child.stdout.split()))
    got = Snapshotter(d).load()
    assert got is not None and got[1] in (reported, reported + 1)
    assert got[2] == b"snap %d " % got[1] * 100
