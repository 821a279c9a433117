"""One big DeleteRange in the engine: `python -m bench.bench_delete [-n N] [--sizes 256,8]`.

Fills a fresh Store with N keys (default 280,000, as etcd's benchmark tool before `etcdctl del ""
--from-key`) under one prefix with random tails and 1 KiB values, in batches of 1000 puts as the
applier does, then times one delete_range of the whole prefix in one write batch, commit
included. 256-byte keys take the long-key ("group") path, 8-byte keys the short-key path.
Prints seconds and keys/s, wall and CPU (the machine is shared, so CPU time is the steadier
figure). Profile with
`py-spy record -o out.txt --format raw -- python -m bench.bench_delete -n 100000`.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time

from api.etcdserverpb import rpc_pb2 as pb
from engine import Store, keys

BATCH_OPS = 1000
VALUE_BYTES = 1024
PREFIX = b"/bench/"


def make_keys(n: int, key_bytes: int, rng: random.Random, etcd_like: bool = False) -> list[bytes]:
    """n distinct keys of key_bytes bytes: PREFIX then random bytes (short keys: a random tail
    after one prefix byte). etcd_like: PREFIX, then a random number as a varint padded with
    zero bytes, as etcd's `benchmark put --key-size` makes its keys (mostly 0x00 bytes, which
    the index escapes: its long-key ikeys are near LMDB's key limit)."""
    prefix = PREFIX if key_bytes > len(PREFIX) + 4 else PREFIX[:1]
    tail_bytes = key_bytes - len(prefix)
    out: set[bytes] = set()
    while len(out) < n:
        if etcd_like:
            tail = _varint(rng.randrange(1 << 40)).ljust(tail_bytes, b"\x00")[:tail_bytes]
        else:
            tail = rng.randbytes(tail_bytes)
        out.add(prefix + tail)
    return sorted(out)


def _varint(n: int) -> bytes:
    """Go's binary.PutVarint (zig-zag, 7 bits a byte) of a non-negative n."""
    u = n << 1
    out = bytearray()
    while u >= 0x80:
        out.append(u & 0x7F | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def fill(store: Store, ks: list[bytes], value: bytes, watch: bool) -> None:
    for i in range(0, len(ks), BATCH_OPS):
        with store.write_batch(sync=False) as b:
            for k in ks[i : i + BATCH_OPS]:
                b.put(pb.PutRequest(key=k, value=value))


def time_delete(store: Store, prefix: bytes, prev_kv: bool) -> tuple[float, float, int]:
    """(wall s, cpu s, keys deleted) of one delete_range of `prefix` including commit."""
    req = pb.DeleteRangeRequest(key=prefix, range_end=keys.prefix_end(prefix), prev_kv=prev_kv)
    t0, c0 = time.perf_counter(), time.process_time()
    with store.write_batch(sync=False) as b:
        resp = b.delete_range(req)
    return time.perf_counter() - t0, time.process_time() - c0, resp.deleted


def run_case(
    root: str, n: int, key_bytes: int, seed: int, watch: bool, prev_kv: bool, etcd_like: bool
) -> None:
    rng = random.Random(seed)
    ks = make_keys(n, key_bytes, rng, etcd_like)
    rng.shuffle(ks)  # the applier sees keys in arrival order, not sorted
    path = tempfile.mkdtemp(dir=root)
    store = Store.open(path)
    watcher = None
    try:
        if watch:
            watcher = store.watch_hub.watch(b"\x00", b"\x00", start_revision=0)
        fill(store, ks, b"v" * VALUE_BYTES, watch)
        prefix = PREFIX if key_bytes > len(PREFIX) + 4 else PREFIX[:1]
        wall_s, cpu_s, deleted = time_delete(store, prefix, prev_kv)
        assert deleted == n, (deleted, n)
        tag = f"{key_bytes:3d}-byte keys" + (", watched" if watch else "")
        tag += ", prev_kv" if prev_kv else ""
        tag += ", etcd-like" if etcd_like else ""
        print(
            f"delete_range {n:,} {tag:28s}: {wall_s:6.2f} s wall {n / wall_s:10,.0f} keys/s, "
            f"{cpu_s:6.2f} s cpu {n / max(cpu_s, 1e-9):10,.0f} keys/s"
        )
    finally:
        if watcher is not None:
            watcher.cancel()
        store.close()
        shutil.rmtree(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=280_000, help="keys to fill and delete")
    ap.add_argument("--sizes", default="256,8", help="key sizes in bytes, comma separated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--watch", action="store_true", help="with a watcher (events kept)")
    ap.add_argument("--prev-kv", action="store_true", help="delete with prev_kv")
    ap.add_argument("--etcd-keys", action="store_true", help="keys as etcd's benchmark makes them")
    args = ap.parse_args()
    print(f"seed {args.seed}")
    root = tempfile.mkdtemp(prefix="bench_delete_")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            run_case(root, args.n, size, args.seed, args.watch, args.prev_kv, args.etcd_keys)
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
