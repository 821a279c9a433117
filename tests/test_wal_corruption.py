"""Bit flips and damage in each region of the WAL: the outcome is repair (a torn tail at the
very end) or refusal naming the file and the offset, exactly; a refusal changes no byte."""

from __future__ import annotations

import os
import pathlib
import random

import pytest

from wal import WAL, Entry, HardState, SnapshotMarker, errors
from wal.record import scan_segment

META = b"node=1"
SEGMENT_BYTES = 4096
BATCHES = 80


def build(d: str) -> list[Entry]:
    """A log of several segments; every batch (one entry + hard state) synced."""
    wal = WAL.create(d, META, segment_bytes=SEGMENT_BYTES)
    written = []
    for i in range(1, BATCHES + 1):
        e = Entry(i, 1, 0, bytes([i]) * 90)
        wal.save(HardState(1, 1, i), [e], sync=True)
        written.append(e)
    wal.close()
    return written


def segments(d: str) -> list[str]:
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".wal"))


def record_offsets(path: str) -> list[tuple[int, int]]:
    """(record type, offset) of each record in a segment."""
    scan = scan_segment(pathlib.Path(path).read_bytes(), None)
    assert scan.bad is None
    return [(rtype, offset) for rtype, _, offset in scan.records]


def flip(path: str, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def snapshot_dir(d: str) -> dict[str, bytes]:
    return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}


def open_log(d: str) -> tuple[HardState, list[Entry]]:
    wal, _, hs, ents = WAL.open(d, SnapshotMarker(0, 0), segment_bytes=SEGMENT_BYTES)
    wal.close()
    return hs, ents


def assert_refused(d: str, path: str, offset: int) -> None:
    before = snapshot_dir(d)
    with pytest.raises(errors.CorruptionError) as info:
        open_log(d)
    assert info.value.path == path and info.value.offset == offset, str(info.value)
    assert path in str(info.value) and f"offset {offset}" in str(info.value)
    after = snapshot_dir(d)
    after.pop("wal.lock", None)
    before.pop("wal.lock", None)
    assert after == before, "a refused open changed the log"


def test_segment_header_flip_is_refused(tmp_path) -> None:
    """A flipped bit in a segment's metadata record (first or last segment) is refused."""
    d = str(tmp_path / "wal")
    build(d)
    for path in (segments(d)[0], segments(d)[-1]):
        meta_offset = record_offsets(path)[1][1]
        flip(path, meta_offset + 26)
        assert_refused(d, path, meta_offset)
        flip(path, meta_offset + 26)


def test_crc_record_flip_is_refused(tmp_path) -> None:
    """A flipped bit in the crc record opening a middle segment is refused."""
    d = str(tmp_path / "wal")
    build(d)
    path = segments(d)[2]
    flip(path, 24)
    assert_refused(d, path, 0)


def test_middle_record_flip_is_refused(tmp_path) -> None:
    """A flipped bit in a record in the middle of an earlier segment is refused."""
    d = str(tmp_path / "wal")
    build(d)
    path = segments(d)[1]
    offsets = record_offsets(path)
    rtype, offset = offsets[len(offsets) // 2]
    flip(path, offset + 40)
    assert_refused(d, path, offset)


def test_flip_in_last_segment_before_synced_records_is_refused(tmp_path) -> None:
    """Damage in the last segment followed by records written after it was synced is
    corruption, not a torn tail: etcd 3.4 truncates here and loses acknowledged writes."""
    d = str(tmp_path / "wal")
    build(d)
    path = segments(d)[-1]
    offsets = record_offsets(path)
    assert len(offsets) > 8
    _, offset = offsets[4]
    flip(path, offset + 8, bit=5)  # the length word: the reader loses its way
    assert_refused(d, path, offset)


def test_last_record_flip_is_repaired(tmp_path) -> None:
    """A flipped bit in the very last record is a torn tail: copied to .broken, truncated,
    and the log goes on; the next save and reopen see a consistent log."""
    d = str(tmp_path / "wal")
    written = build(d)
    path = segments(d)[-1]
    _, offset = record_offsets(path)[-1]  # the last batch's hard state
    flip(path, offset + 30)
    hs, ents = open_log(d)
    assert ents == written and hs == HardState(1, 1, BATCHES - 1)
    assert os.path.exists(path + ".broken")
    wal, _, _, _ = WAL.open(d, SnapshotMarker(0, 0), segment_bytes=SEGMENT_BYTES)
    wal.save(HardState(1, 1, BATCHES), [Entry(BATCHES + 1, 1, 0, b"z")], sync=True)
    wal.close()
    hs, ents = open_log(d)
    assert ents[-1] == Entry(BATCHES + 1, 1, 0, b"z") and hs.commit == BATCHES


def test_cut_short_tail_is_repaired(tmp_path) -> None:
    """A last record cut short (the file ends inside it) is repaired."""
    d = str(tmp_path / "wal")
    written = build(d)
    path = segments(d)[-1]
    _, offset = record_offsets(path)[-2]  # the last entry
    os.truncate(path, offset + 30)
    hs, ents = open_log(d)
    assert ents == written[:-1] and hs == HardState(1, 1, BATCHES - 1)


def test_zeroed_tail_is_clean(tmp_path) -> None:
    """Preallocated zeroes after the last record are the end of the log, not damage."""
    d = str(tmp_path / "wal")
    written = build(d)
    path = segments(d)[-1]
    assert os.path.getsize(path) == SEGMENT_BYTES
    hs, ents = open_log(d)
    assert ents == written and not any(n.endswith(".broken") for n in os.listdir(d))


def test_random_byte_damage_is_never_silent(tmp_path) -> None:
    """Any single damaged byte in the written region: refused, or (in the last frame only)
    repaired by dropping exactly the damaged tail. Never wrong data."""
    seed = 20261204
    rng = random.Random(seed)
    d = str(tmp_path / "wal")
    written = build(d)
    paths = segments(d)
    pristine = {p: pathlib.Path(p).read_bytes() for p in paths}
    outcomes = {"refused": 0, "repaired": 0}
    for trial in range(150):
        path = rng.choice(paths)
        data = pristine[path]
        used = len(data.rstrip(b"\0"))
        offset = rng.randrange(used)
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(bytes([data[offset] ^ (1 + rng.randrange(255))]))
        try:
            hs, ents = open_log(d)
        except errors.CorruptionError:
            outcomes["refused"] += 1
        else:
            outcomes["repaired"] += 1
            assert path == paths[-1], f"seed {seed} trial {trial}: repaired a middle segment"
            assert ents == written[: len(ents)], f"seed {seed} trial {trial}: wrong data"
            assert len(ents) >= BATCHES - 1, f"seed {seed} trial {trial}: lost more than the tail"
        for p in paths:
            with open(p, "wb") as f:
                f.write(pristine[p])
        for n in os.listdir(d):
            if n.endswith(".broken"):
                os.remove(os.path.join(d, n))
    assert outcomes["refused"] > 100, outcomes
