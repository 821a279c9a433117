"""Snapshot files: `<term>-<index>.snap` (16 hex digits each) holding a CRC-checked payload.

Layout (little-endian): magic b"PSNP" (4), format version u32 (1), payload length u64,
CRC-32C of the payload u32, CRC-32C of the 20 bytes before it u32, payload. A file is written
as `<name>.tmp`, fdatasync'ed, renamed into place, and the directory fsynced, so a crash leaves
either the old set of snapshots or the new one plus a stray .tmp (removed by purge). A file that
fails its checks is renamed `<name>.broken` and the next older one is used.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Container

from snapshot.errors import CorruptSnapshotError
from wal import failpoints
from wal.fs import FS, OsFS
from wal.record import crc32c

MAGIC = b"PSNP"
VERSION = 1
HEADER = struct.Struct("<4sIQI")  # magic, version, payload length, payload CRC
HEADER_CRC = struct.Struct("<I")
HEADER_BYTES = HEADER.size + HEADER_CRC.size
SUFFIX = ".snap"


def snap_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}{SUFFIX}"


def parse_snap_name(name: str) -> tuple[int, int] | None:
    """(term, index) of a snapshot file name, or None."""
    if len(name) != 38 or not name.endswith(SUFFIX) or name[16] != "-":
        return None
    try:
        return int(name[:16], 16), int(name[17:33], 16)
    except ValueError:
        return None


def encode(data: bytes) -> bytes:
    head = HEADER.pack(MAGIC, VERSION, len(data), crc32c(data, 0))
    return head + HEADER_CRC.pack(crc32c(head, 0)) + data


def decode(buf: bytes) -> bytes:
    """The payload of a snapshot file; CorruptSnapshotError if any check fails."""
    if len(buf) < HEADER_BYTES:
        raise CorruptSnapshotError(f"snapshot file too short ({len(buf)} bytes)")
    magic, version, size, data_crc = HEADER.unpack_from(buf)
    (head_crc,) = HEADER_CRC.unpack_from(buf, HEADER.size)
    if crc32c(buf[: HEADER.size], 0) != head_crc or magic != MAGIC:
        raise CorruptSnapshotError("snapshot header damaged")
    if version != VERSION:
        raise CorruptSnapshotError(f"unknown snapshot format version {version}")
    data = buf[HEADER_BYTES:]
    if len(data) != size:
        raise CorruptSnapshotError(f"snapshot payload is {len(data)} bytes, header says {size}")
    if crc32c(data, 0) != data_crc:
        raise CorruptSnapshotError("snapshot payload CRC mismatch")
    return data


class Snapshotter:
    """Saves, loads and purges the snapshot files of one directory (created if missing)."""

    def __init__(self, dir: str, *, fs: FS | None = None) -> None:
        self._fs = fs or OsFS()
        self._dir = dir.rstrip("/")
        if not self._fs.exists(self._dir):
            self._fs.mkdir(self._dir)

    def save(self, term: int, index: int, data: bytes) -> None:
        """Writes `<term>-<index>.snap` durably (tmp, fdatasync, rename, directory fsync)."""
        failpoints.hit("snapshot.before_save")
        name = snap_name(term, index)
        tmp = os.path.join(self._dir, name + ".tmp")
        f = self._fs.open(tmp, create=True)
        try:
            f.truncate(0)
            f.pwrite(encode(data), 0)
            failpoints.hit("snapshot.before_fsync")
            f.datasync()
        finally:
            f.close()
        failpoints.hit("snapshot.before_rename")
        self._fs.rename(tmp, os.path.join(self._dir, name))
        self._fs.sync_dir(self._dir)
        failpoints.hit("snapshot.after_save")

    def names(self) -> list[str]:
        """Valid-looking snapshot file names, newest first."""
        found = [(parse_snap_name(n), n) for n in self._fs.listdir(self._dir)]
        ordered = sorted(((p[1], p[0]), n) for p, n in found if p is not None)
        return [n for _, n in reversed(ordered)]

    def load(
        self, acceptable: Container[tuple[int, int]] | None = None
    ) -> tuple[int, int, bytes] | None:
        """(term, index, data) of the newest valid snapshot, or None.

        A corrupt file is renamed `.broken` and the next older one is tried. `acceptable`, if
        given, limits the choice to those (term, index) pairs (for instance the snapshot
        markers found in the WAL, as etcd 3.4 does).
        """
        for name in self.names():
            term, index = parse_snap_name(name)  # type: ignore[misc]
            if acceptable is not None and (term, index) not in acceptable:
                continue
            path = os.path.join(self._dir, name)
            try:
                data = decode(self._fs.read_file(path))
            except CorruptSnapshotError:
                self._fs.rename(path, path + ".broken")
                self._fs.sync_dir(self._dir)
                continue
            return term, index, data
        return None

    def purge(self, keep: int = 5) -> list[str]:
        """Removes all but the newest `keep` snapshot files, and stray .tmp files."""
        removed = self.names()[keep:]
        removed += [n for n in self._fs.listdir(self._dir) if n.endswith(SUFFIX + ".tmp")]
        for name in removed:
            self._fs.remove(os.path.join(self._dir, name))
        if removed:
            self._fs.sync_dir(self._dir)
        return removed
