"""Unit tests of the WAL over the real file system: round trips, replay rules, segments,
release, the lock, sync counting and failed fsyncs, failpoints."""

from __future__ import annotations

import os
import random

import pytest

from tests.wal_fakefs import FakeFile, FakeFS
from wal import WAL, Entry, HardState, SnapshotMarker, errors, failpoints
from wal.wal import parse_segment_name, segment_name

META = b"node=1,cluster=9"
SEG = 1 << 16  # small segments: the tests need no 64 MiB preallocation


def entries(first: int, count: int, term: int = 1, size: int = 30) -> list[Entry]:
    return [Entry(i, term, i % 3, bytes([i % 251]) * size) for i in range(first, first + count)]


def test_create_then_open_is_empty(tmp_path) -> None:
    """A new log opens from marker (0, 0) with its metadata, a zero hard state, no entries."""
    d = str(tmp_path / "wal")
    WAL.create(d, META, segment_bytes=SEG).close()
    wal, meta, hs, ents = WAL.open(d, SnapshotMarker(0, 0), segment_bytes=SEG)
    wal.close()
    assert (meta, hs, ents) == (META, HardState(), [])
    assert segment_name(0, 0) in os.listdir(d)


def test_create_refuses_existing_dir(tmp_path) -> None:
    """create never overwrites: an existing directory is an error."""
    d = str(tmp_path / "wal")
    WAL.create(d, META, segment_bytes=SEG).close()
    with pytest.raises(errors.ExistsError):
        WAL.create(d, META, segment_bytes=SEG)


def test_round_trip(tmp_path) -> None:
    """Entries and hard states saved in batches (synced or not) come back after close."""
    d = str(tmp_path / "wal")
    rng = random.Random(7)
    wal = WAL.create(d, META, segment_bytes=8192)
    written: list[Entry] = []
    hs = HardState()
    index = 1
    for _ in range(200):
        batch = [
            Entry(index + i, 3, rng.randrange(3), rng.randbytes(rng.randrange(300)))
            for i in range(rng.randrange(4))
        ]
        index += len(batch)
        hs = HardState(3, 2, index - 1)
        wal.save(hs, batch, sync=rng.random() < 0.5)
        written += batch
    wal.close()
    wal, meta, got_hs, got = WAL.open(d, SnapshotMarker(0, 0), segment_bytes=8192)
    wal.close()
    assert meta == META and got_hs == hs and got == written
    assert len(os.listdir(d)) > 3, "small segments were cut"


def test_truncation_replaces_tail(tmp_path) -> None:
    """A later entry at index i replaces the entries from i on, as Raft overwrites a log."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, META, segment_bytes=SEG)
    wal.save(None, entries(1, 10, term=1), sync=True)
    wal.save(None, entries(6, 2, term=2), sync=True)
    wal.close()
    reopened, _, _, got = WAL.open(d, SnapshotMarker(0, 0), segment_bytes=SEG)
    reopened.close()
    assert [(e.index, e.term) for e in got] == [(i, 1) for i in range(1, 6)] + [(6, 2), (7, 2)]


def test_open_from_marker(tmp_path) -> None:
    """Opening from a snapshot marker returns only the entries after it, and checks it."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, META, segment_bytes=2048)
    wal.save(HardState(1, 1, 20), entries(1, 40), sync=True)
    wal.save_snapshot(SnapshotMarker(20, 1))
    wal.save(HardState(1, 1, 40), entries(41, 10), sync=True)
    wal.close()
    wal, _, hs, got = WAL.open(d, SnapshotMarker(20, 1), segment_bytes=2048)
    wal.close()
    assert [e.index for e in got] == list(range(21, 51)) and hs == HardState(1, 1, 40)
    with pytest.raises(errors.SnapshotMismatchError):
        WAL.open(d, SnapshotMarker(20, 2), segment_bytes=SEG)
    with pytest.raises(errors.SnapshotNotFoundError):
        WAL.open(d, SnapshotMarker(30, 1), segment_bytes=SEG)


def test_segments_are_named_and_preallocated(tmp_path) -> None:
    """Segments are <seq>-<first index>.wal, contiguous, each preallocated to its size."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, META, segment_bytes=4096)
    for i in range(1, 101):
        wal.save(None, entries(i, 1, size=100), sync=False)
    names = wal.segment_names()
    wal.close()
    parsed = [parse_segment_name(n) for n in names]
    assert [p[0] for p in parsed] == list(range(len(names)))  # type: ignore[index]
    assert parsed[0] == (0, 0) and len(names) > 3
    reopened, _, _, got = WAL.open(d, SnapshotMarker(0, 0), segment_bytes=4096)
    reopened.close()
    # Each name's first index is the entry that follows the previous segment's last one.
    for seq, first in parsed[1:]:  # type: ignore[misc]
        assert any(e.index == first for e in got), (seq, first)
    tail = os.path.join(d, names[-1])
    assert os.path.getsize(tail) == 4096


def test_release_keeps_newest(tmp_path) -> None:
    """release_to removes segments wholly below the snapshot, never the newest `keep`, and
    the log still opens from that snapshot."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, META, segment_bytes=2048)
    for i in range(1, 201):
        wal.save(HardState(1, 1, i), entries(i, 1), sync=False)
    before = wal.segment_names()
    wal.save_snapshot(SnapshotMarker(150, 1))
    assert wal.release_to(150, keep=len(before) + 5) == []
    removed = wal.release_to(150, keep=2)
    after = wal.segment_names()
    wal.close()
    assert removed and removed == before[: len(removed)]
    assert sorted(n for n in os.listdir(d) if n.endswith(".wal")) == after
    wal, _, hs, got = WAL.open(d, SnapshotMarker(150, 1), segment_bytes=2048)
    wal.close()
    assert [e.index for e in got] == list(range(151, 201)) and hs.commit == 200


def test_lock_keeps_second_opener_out(tmp_path) -> None:
    """While a WAL is open, a second open of the same directory fails; after close it works."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, META, segment_bytes=SEG)
    with pytest.raises(errors.LockedError):
        WAL.open(d, SnapshotMarker(0, 0), segment_bytes=SEG)
    wal.close()
    WAL.open(d, SnapshotMarker(0, 0), segment_bytes=SEG)[0].close()


def test_sync_only_when_asked() -> None:
    """One fdatasync per batch that asks for it, none for one that does not (group commit)."""
    fs = FakeFS()
    fs.makedirs("/d")
    wal = WAL.create("/d/wal", META, fs=fs, segment_bytes=1 << 16)
    base = fs.syncs
    wal.save(HardState(1, 0, 0), entries(1, 100), sync=True)
    assert fs.syncs == base + 1
    wal.save(HardState(1, 0, 50), [], sync=False)
    assert fs.syncs == base + 1
    wal.save(None, entries(101, 5), sync=True)
    assert fs.syncs == base + 2


def test_failed_fsync_is_fatal() -> None:
    """A failed fdatasync raises FatalIOError and the WAL refuses every later save."""
    fs = FakeFS()
    fs.makedirs("/d")
    wal = WAL.create("/d/wal", META, fs=fs, segment_bytes=1 << 16)

    def broken_sync(self: FakeFile) -> None:
        raise OSError(5, "EIO")

    original = FakeFile.datasync
    FakeFile.datasync = broken_sync  # type: ignore[method-assign]
    try:
        with pytest.raises(errors.FatalIOError):
            wal.save(None, entries(1, 1), sync=True)
    finally:
        FakeFile.datasync = original  # type: ignore[method-assign]
    with pytest.raises(errors.ClosedError):
        wal.save(None, entries(2, 1), sync=True)


def test_metadata_conflict(tmp_path) -> None:
    """Segments with different metadata are refused."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, META, segment_bytes=1024)
    for i in range(1, 40):
        wal.save(None, entries(i, 1), sync=False)
    wal._metadata = b"other"  # the next cut writes a different identity
    for i in range(40, 80):
        wal.save(None, entries(i, 1), sync=False)
    wal.close()
    with pytest.raises(errors.MetadataConflictError):
        WAL.open(d, SnapshotMarker(0, 0), segment_bytes=1024)


def test_failpoint_panic_and_counting() -> None:
    """An armed failpoint fires at its n-th hit; the parser reads the environment syntax."""
    assert failpoints.parse("wal.after_fsync:kill, a.b:panic@3") == [
        ("wal.after_fsync", "kill", 1),
        ("a.b", "panic", 3),
    ]
    with pytest.raises(failpoints.FailpointSyntaxError):
        failpoints.parse("wal.after_fsync:explode")
    fs = FakeFS()
    fs.makedirs("/d")
    wal = WAL.create("/d/wal", META, fs=fs, segment_bytes=1 << 16)
    failpoints.arm("wal.before_fsync", "panic", at_hit=2)
    try:
        wal.save(None, entries(1, 1), sync=True)
        with pytest.raises(failpoints.FailpointPanic):
            wal.save(None, entries(2, 1), sync=True)
        assert failpoints.hits("wal.before_fsync") == 2
    finally:
        failpoints.disarm_all()
    assert failpoints.armed is None


def test_gap_in_entries_is_refused(tmp_path) -> None:
    """An entry that skips an index cannot come from Raft: the log is refused, naming where."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, META, segment_bytes=SEG)
    wal.save(None, entries(1, 3), sync=True)
    wal.save(None, entries(5, 1), sync=True)
    wal.close()
    with pytest.raises(errors.CorruptionError, match="entry 5 leaves a gap after 3"):
        WAL.open(d, SnapshotMarker(0, 0), segment_bytes=SEG)


def test_rewrite_at_or_below_marker_clears_later_entries(tmp_path) -> None:
    """Entries 1-4 (term 1), then index 2 rewritten (term 2), snapshot at (2, 2): the stale
    entries 3 and 4 of term 1 must not come back after the marker."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, META, segment_bytes=SEG)
    wal.save(None, entries(1, 4, term=1), sync=True)
    wal.save(HardState(2, 1, 2), entries(2, 1, term=2), sync=True)
    wal.save_snapshot(SnapshotMarker(2, 2))
    wal.close()
    wal, _, hs, got = WAL.open(d, SnapshotMarker(2, 2), segment_bytes=SEG)
    wal.close()
    assert got == [] and hs == HardState(2, 1, 2)


def test_oversized_record_is_refused_before_writing() -> None:
    """A record over the 64 MiB frame limit raises RecordTooLargeError and writes nothing;
    the WAL stays usable."""
    fs = FakeFS()
    fs.makedirs("/d")
    wal = WAL.create("/d/wal", META, fs=fs, segment_bytes=1 << 16)
    steps = fs.steps
    with pytest.raises(errors.RecordTooLargeError):
        wal.save(None, [Entry(1, 1, 0, bytes(64 << 20))], sync=True)
    assert fs.steps == steps
    wal.save(None, entries(1, 1), sync=True)
    wal.close()
    _, _, _, got = WAL.open("/d/wal", SnapshotMarker(0, 0), fs=fs, segment_bytes=1 << 16)
    assert got == entries(1, 1)
