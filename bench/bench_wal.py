"""WAL micro-benchmark: the disk's raw fdatasync limit and WAL appends in one run.

    python -m bench.bench_wal [--dir D] [--seconds 2] [--replay-bytes 64MiB] [--segment-bytes]

Prints, on the same file system:
- raw: a loop of 4 KiB write + fdatasync (latency), and 256 KiB write + fdatasync (MB/s),
  both into a preallocated file as the WAL writes;
- WAL appends of 256-byte entries in batches of 1, 10, 100 and 1,000 records, one fdatasync per
  batch: latency per batch, records/s and MB/s of entry data;
- encoding cost per entry (CPU only, no I/O);
- replay: open of a WAL of --replay-bytes (written unsynced in large batches), records/s.
Targets (issue #3): batch of 1 within 1.2x of raw latency; batch of 1,000 at 100 MB/s or the
disk's limit; replay at 300,000 records/s or more.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from wal import WAL, Entry, HardState, SnapshotMarker
from wal.record import CRC_IMPLEMENTATION, encode_entries

ENTRY_BYTES = 256
ROUNDS = 5
MIB = 1 << 20


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def summary(latencies_s: list[float]) -> str:
    ordered = sorted(latencies_s)
    p50 = ordered[len(ordered) // 2] * 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6
    return f"mean {statistics.fmean(ordered) * 1e6:8.1f} us  p50 {p50:8.1f} us  p99 {p99:8.1f} us"


def raw_disk(
    d: str, write_bytes: int, seconds: float, file_bytes: int, *, prewritten: bool = False
) -> list[float]:
    """Latencies of write + fdatasync of `write_bytes` at increasing offsets of a
    preallocated file (wrapping around), the same pattern as WAL appends. `prewritten`
    fills the file with written zeroes first instead of fallocate (no extent conversion)."""
    path = os.path.join(d, f"raw-{write_bytes}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if prewritten:
            zeroes = bytes(MIB)
            for offset in range(0, file_bytes, MIB):
                os.pwrite(fd, zeroes, offset)
        else:
            os.posix_fallocate(fd, 0, file_bytes)
        os.fsync(fd)
        buf = os.urandom(write_bytes)
        offset = 0
        latencies: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            os.pwrite(fd, buf, offset)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - t0)
            offset = (offset + write_bytes) % (file_bytes - write_bytes)
        return latencies
    finally:
        os.close(fd)
        os.remove(path)


def wal_appends(d: str, batch: int, seconds: float, segment_bytes: int) -> list[float]:
    wal_dir = os.path.join(d, f"wal-{batch}")
    wal = WAL.create(wal_dir, b"bench", segment_bytes=segment_bytes)
    data = os.urandom(ENTRY_BYTES)
    index = 1
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end or len(latencies) < 5:
            entries = [Entry(i, 1, 0, data) for i in range(index, index + batch)]
            index += batch
            t0 = time.perf_counter()
            wal.save(HardState(1, 1, index - 1), entries, sync=True)
            latencies.append(time.perf_counter() - t0)
    finally:
        wal.close()
        shutil.rmtree(wal_dir)
    return latencies


def encode_cost_s(count: int) -> float:
    data = os.urandom(ENTRY_BYTES)
    entries = [Entry(i, 1, 0, data) for i in range(1, count + 1)]
    best = float("inf")
    for _ in range(5):
        out: list[bytes] = []
        t0 = time.process_time()
        encode_entries(out, entries * 10, 0, 0)
        b"".join(out)
        best = min(best, time.process_time() - t0)
    return best / (count * 10)


def replay(d: str, total_bytes: int, segment_bytes: int) -> tuple[int, float, float, int]:
    """Writes `total_bytes` of 256-byte entries unsynced, then times a full open."""
    wal_dir = os.path.join(d, "wal-replay")
    wal = WAL.create(wal_dir, b"bench", segment_bytes=segment_bytes)
    data = os.urandom(ENTRY_BYTES)
    per_batch = 4096
    frame_bytes = 24 + 24 + ENTRY_BYTES
    count = max(per_batch, total_bytes // frame_bytes)
    index = 1
    while index <= count:
        wal.save(None, [Entry(i, 1, 0, data) for i in range(index, index + per_batch)], sync=False)
        index += per_batch
    wal.close()
    os.sync()
    t0, c0 = time.perf_counter(), time.process_time()
    wal, _, _, entries = WAL.open(wal_dir, SnapshotMarker(0, 0), segment_bytes=segment_bytes)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    wal.close()
    n = len(entries)
    shutil.rmtree(wal_dir)
    return n, elapsed, cpu, n * frame_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="where to write (default: a temporary dir in /var/tmp)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--replay-bytes", type=parse_size, default=64 * MIB)
    parser.add_argument("--segment-bytes", type=parse_size, default=64 * MIB)
    args = parser.parse_args()
    d = tempfile.mkdtemp(prefix="bench-wal-", dir=args.dir or "/var/tmp")
    try:
        run(d, args)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(d: str, args: argparse.Namespace) -> None:
    seconds, seg = args.seconds, args.segment_bytes
    print(
        f"dir {d}; entry {ENTRY_BYTES} B; segment {seg // MIB} MiB; {seconds:.1f} s each; "
        f"CRC {CRC_IMPLEMENTATION}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"
    )
    # Raw and WAL batch-1 measurements alternate in short rounds, so both see the same
    # background load (the machine is shared).
    raw4k: list[float] = []
    wal1: list[float] = []
    for _ in range(ROUNDS):
        raw4k += raw_disk(d, 4096, seconds / ROUNDS, 64 * MIB)
        wal1 += wal_appends(d, 1, seconds / ROUNDS, seg)
    print(f"raw 4 KiB write+fdatasync      {summary(raw4k)}")
    report(1, wal1, raw4k)
    raw4k_written = raw_disk(d, 4096, seconds / 2, 16 * MIB, prewritten=True)
    print(f"raw 4 KiB, pre-written file    {summary(raw4k_written)}  (no extent conversion)")
    raw256k = raw_disk(d, 256 << 10, seconds, 256 * MIB)
    raw_mbps = (256 << 10) / statistics.median(raw256k) / 1e6
    print(f"raw 256 KiB write+fdatasync    {summary(raw256k)}  {raw_mbps:7.1f} MB/s (p50)")
    for batch in (10, 100, 1000):
        report(batch, wal_appends(d, batch, seconds, seg), raw4k)
    print(f"encode cost per 256 B entry    {encode_cost_s(1000) * 1e6:.2f} us of CPU (best of 5)")
    n, elapsed, cpu, size = replay(d, args.replay_bytes, seg)
    print(
        f"replay {size / MIB:.0f} MiB of records, {n} entries: {elapsed:.2f} s wall, "
        f"{n / elapsed:,.0f} rec/s, {size / elapsed / 1e6:.0f} MB/s; "
        f"{cpu:.2f} s CPU, {n / cpu:,.0f} rec/s of CPU time"
    )


def report(batch: int, lat: list[float], raw4k: list[float]) -> None:
    p50 = statistics.median(lat)
    rps = batch / p50
    mbps = rps * ENTRY_BYTES / 1e6
    extra = ""
    if batch == 1:
        ratio_p50 = p50 / statistics.median(raw4k)
        ratio_mean = statistics.fmean(lat) / statistics.fmean(raw4k)
        extra = f"  vs raw: {ratio_p50:.2f}x (p50) {ratio_mean:.2f}x (mean)"
    print(f"wal batch {batch:5d}  {summary(lat)}  {rps:9.0f} rec/s {mbps:6.1f} MB/s (p50){extra}")


if __name__ == "__main__":
    main()
