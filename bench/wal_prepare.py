"""WAL.save(sync=True) latency into fallocated space against space zero-filled by prepare().

`python -m bench.wal_prepare [--records 1000] [--batches 1,16,64] [--rounds 6] [--dir DIR]`
creates a fresh WAL per run in DIR (default: a temporary directory on the same disk as /tmp),
saves `records` batches of B entries of 300 bytes each (B: 1 client, or a group commit of
many) with fdatasync, with and without `prepare()` run ahead
(between saves, outside the timing, as the storage thread does when idle), alternating the
two in rounds, and prints the median per-save latency of each. The disk is shared and noisy:
compare within one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from wal import WAL, Entry, HardState


def one_run(root: Path, records: int, batch: int, prepare: bool) -> float:
    """Median seconds per synced save of one fresh WAL."""
    path = root / f"wal-{time.monotonic_ns()}"
    wal = WAL.create(str(path), b"bench")
    try:
        while prepare and wal.prepare():
            pass
        times = []
        index = 1
        for _ in range(records):
            entries = [Entry(i, 1, 0, b"x" * 300) for i in range(index, index + batch)]
            index += batch
            started_s = time.perf_counter()
            wal.save(HardState(1, 1, index - 1), entries, sync=True)
            times.append(time.perf_counter() - started_s)
            while prepare and wal.needs_prepare():
                wal.prepare()
        return statistics.median(times)
    finally:
        wal.close()
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--dir", default=None)
    a = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wal-prepare-", dir=a.dir))
    batches = [int(b) for b in a.batches.split(",")]
    results: dict[tuple[int, bool], list[float]] = {}
    try:
        for r in range(a.rounds):
            for batch in batches:
                for prepare in [False, True] if r % 2 == 0 else [True, False]:
                    seconds = one_run(root, a.records, batch, prepare)
                    results.setdefault((batch, prepare), []).append(seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"WAL save(sync=True) of B 300-byte entries, medians of {a.rounds} runs")
    for batch in batches:
        base = statistics.median(results[(batch, False)])
        for prepare in (False, True):
            m = statistics.median(results[(batch, prepare)])
            name = "prepared" if prepare else "fallocated"
            print(f"B={batch:<4} {name:11} {m * 1e6:7.0f} us  ({base / m:.2f}x faster)")


if __name__ == "__main__":
    main()
