"""A child process for the WAL's kill tests: appends synced batches and reports each one.

    python -m tests.wal_child DIR SEGMENT_BYTES MARKER_INDEX MARKER_TERM BATCHES_MAX SEED

Opens (or creates) the WAL in DIR from the given snapshot marker, then appends batches of
entries with fsync. After each save returns it prints `ok <last index>`; every 15 batches it
saves a snapshot marker, prints `snap <index> <term>`, then releases old segments. Entry i has
term 1 and data `entry_data(i)`, so the parent can check every byte it gets back.
"""

from __future__ import annotations

import os
import random
import sys

from wal import WAL, Entry, HardState, SnapshotMarker


def entry_data(index: int) -> bytes:
    return (b"%d;" % index) * (1 + index % 37)


def main() -> None:
    d, segment_bytes, m_index, m_term, batches_max, seed = sys.argv[1:7]
    rng = random.Random(int(seed))
    marker = SnapshotMarker(int(m_index), int(m_term))
    if os.path.exists(d):
        wal, _, _, entries = WAL.open(d, marker, segment_bytes=int(segment_bytes))
        last = entries[-1].index if entries else marker.index
    else:
        wal = WAL.create(d, b"child", segment_bytes=int(segment_bytes))
        last = 0
    out = sys.stdout
    for n in range(1, int(batches_max) + 1):
        batch = [
            Entry(last + 1 + i, 1, 0, entry_data(last + 1 + i)) for i in range(rng.randint(1, 6))
        ]
        last = batch[-1].index
        wal.save(HardState(1, 1, last), batch, sync=True)
        out.write(f"ok {last}\n")
        out.flush()
        if n % 15 == 0:
            wal.save_snapshot(SnapshotMarker(last, 1))
            out.write(f"snap {last} 1\n")
            out.flush()
            wal.release_to(last, keep=2)
    wal.close()


if __name__ == "__main__":
    main()
