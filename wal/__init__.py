"""The write-ahead log: typed, CRC-chained, append-only records in preallocated segment files.
Knows nothing of Raft semantics; no asyncio.

    wal = WAL.create(dir, metadata)
    wal, metadata, hard_state, entries = WAL.open(dir, SnapshotMarker(index, term))
    wal.save(hard_state, entries, sync=True); wal.save_snapshot(marker)
    wal.release_to(index, keep=5); wal.close()

The byte layout is in FORMAT.md; failpoints.py holds the named crash hooks.
"""

from wal import errors, failpoints
from wal.record import Entry, EntryLike, HardState, SnapshotMarker
from wal.wal import WAL

__all__ = ["WAL", "Entry", "EntryLike", "HardState", "SnapshotMarker", "errors", "failpoints"]
