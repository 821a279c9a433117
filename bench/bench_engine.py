"""Engine micro-benchmarks (in process, no server): `python -m bench.bench_engine [--large N]`.

Prints one line per figure. Targets on the 2-core dev machine: batched puts >= 100,000/s,
latest point get >= 100,000/s, open time < 0.5 s at 10k and at 1M keys.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections.abc import Callable

from api.etcdserverpb import rpc_pb2 as pb
from engine import Store

BATCH_OPS = 1000
VALUE = b"v" * 256


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of fn(); also remembers its CPU seconds in CPU[0] (the dev machine is shared,
    so wall time alone over-states the cost when other processes hold the cores)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    CPU[0] = time.process_time() - c0
    return time.perf_counter() - t0


CPU = [0.0]


REPEATS = 3  # the best of a few runs: the other engineers' processes share the cores


def best_rate(n: int, runs: list[tuple[float, float]]) -> str:
    wall = min(r[0] for r in runs)
    cpu = min(r[1] for r in runs)
    return f"{n / wall:10,.0f}/s wall, {n / max(cpu, 1e-9):10,.0f}/s cpu (best of {len(runs)})"


def rate(n: int, wall_s: float) -> str:
    return f"{n / wall_s:10,.0f}/s wall, {n / max(CPU[0], 1e-9):10,.0f}/s cpu"


def put_requests(keys: list[bytes]) -> list[pb.PutRequest]:
    return [pb.PutRequest(key=k, value=VALUE) for k in keys]


def load(store: Store, reqs: list[pb.PutRequest], sync: bool) -> None:
    for i in range(0, len(reqs), BATCH_OPS):
        with store.write_batch(sync=sync) as b:
            for r in reqs[i : i + BATCH_OPS]:
                b.put(r)


def bench_puts(root: str, n: int, rng: random.Random) -> Store:
    seq = [b"%016d" % i for i in range(n)]
    rnd = [rng.randbytes(16) for _ in range(n)]
    for name, ks in (("sequential", seq), ("random", rnd)):
        for sync in (False, True):
            runs = []
            for _ in range(REPEATS):
                path = tempfile.mkdtemp(dir=root)
                s = Store.open(path)
                reqs = put_requests(ks)
                runs.append((timed(lambda s=s, reqs=reqs, sync=sync: load(s, reqs, sync)), CPU[0]))
                s.close()
                shutil.rmtree(path)
            tag = "fsync per batch" if sync else "no fsync"
            print(f"put {name:10s} keys, 1000/batch, {tag:15s}: {best_rate(n, runs)}")
    path = tempfile.mkdtemp(dir=root)
    s = Store.open(path)
    load(s, put_requests(rnd), False)
    s.random_keys = rnd  # type: ignore[attr-defined]
    return s


def bench_reads(s: Store, rng: random.Random) -> None:
    ks = s.random_keys  # type: ignore[attr-defined]
    reqs = [pb.RangeRequest(key=rng.choice(ks)) for _ in range(50_000)]
    runs = [(timed(lambda: [s.range(r) for r in reqs]), CPU[0]) for _ in range(REPEATS)]
    print(f"latest point get                               : {best_rate(len(reqs), runs)}")
    # 1,000 keys under a prefix, then overwritten so a historical read has to skip newer ones
    with s.write_batch() as b:
        for i in range(1000):
            b.put(pb.PutRequest(key=b"pfx/%04d" % i, value=VALUE))
    old_rev = s.revision
    with s.write_batch() as b:
        for i in range(1000):
            b.put(pb.PutRequest(key=b"pfx/%04d" % i, value=b"new"))
    req = pb.RangeRequest(key=b"pfx/", range_end=b"pfx0")
    dt = timed(lambda: [s.range(req) for _ in range(50)]) / 50
    assert len(s.range(req).kvs) == 1000
    print(f"range of 1,000 keys under a prefix             : {dt * 1e3:10.2f} ms wall")
    req = pb.RangeRequest(key=b"pfx/", range_end=b"pfx0", revision=old_rev)
    dt = timed(lambda: [s.range(req) for _ in range(50)]) / 50
    assert s.range(req).kvs[0].value == VALUE
    print(f"historical range of 1,000 keys                 : {dt * 1e3:10.2f} ms wall")


def bench_replay(s: Store, events: int) -> None:
    start = s.revision + 1
    with s.write_batch(sync=False) as b:
        for i in range(events):
            b.put(pb.PutRequest(key=b"w/%08d" % (i % 5000), value=VALUE))
    w = s.watch_hub.watch(b"w/", b"w0", start)
    got = 0

    def drain() -> None:
        nonlocal got
        while evs := w.take(1000):
            assert isinstance(evs, list)
            got += len(evs)

    dt = timed(drain)
    assert got == events, got
    print(f"replay {events:,} events to a new watcher      : {rate(events, dt)}")


def bench_compaction(s: Store) -> None:
    """Compact everything written so far: the writer's pause is one step (1,000 records)."""
    steps: list[float] = []
    t0 = time.perf_counter()
    with s.write_batch() as b:
        b.compact(s.revision)
    steps.append(time.perf_counter() - t0)
    while True:
        t0 = time.perf_counter()
        more = s.compaction_step()
        steps.append(time.perf_counter() - t0)
        if not more:
            break
    print(
        f"compaction of {s.revision:,} revisions in {len(steps)} steps: "
        f"{sum(steps):.2f} s wall, longest step {max(steps) * 1e3:.1f} ms"
    )


def bench_open(root: str, n: int) -> None:
    path = tempfile.mkdtemp(dir=root)
    s = Store.open(path)
    load(s, [pb.PutRequest(key=b"%016d" % i, value=b"x" * 32) for i in range(n)], False)
    s.close()
    dts = []
    for _ in range(5):
        t0 = time.perf_counter()
        s = Store.open(path)
        dts.append(time.perf_counter() - t0)
        s.close()
    print(f"open with {n:>9,} keys                     : {min(dts) * 1e3:10.2f} ms")
    shutil.rmtree(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--puts", type=int, default=100_000, help="keys per put benchmark")
    ap.add_argument("--large", type=int, default=1_000_000, help="keys of the large open test")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = tempfile.mkdtemp(prefix="petra-bench-", dir=args.dir)
    try:
        s = bench_puts(root, args.puts, rng)
        bench_reads(s, rng)
        bench_replay(s, args.events)
        bench_compaction(s)
        s.close()
        bench_open(root, 10_000)
        if args.large:
            bench_open(root, args.large)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
