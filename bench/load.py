"""The load generator: worker processes, each an asyncio loop with many concurrent calls.

Theory of operation. The parent splits the run (clients, connections, total, rate) over
`procs` worker processes (spawned, so no gRPC state crosses a fork). Each worker opens its
channels, waits until they are connected, and meets the others at a barrier; then every
client task loops: take a request from the budget, wait for the pacer, send pre-serialized
bytes through a raw gRPC call, and record (start, end) in flat arrays. Watch workloads meet
at a second barrier once every watcher exists, so the puts only start when all are
listening. Each worker sends back its arrays, error counts and the CPU it used; the parent
merges them into one Summary per series ("put", "read", "write", "events", ...).

Times come from time.perf_counter, which is CLOCK_MONOTONIC on Linux and therefore
comparable between processes of one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue as queue_mod
import random
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bench import stats
from bench.progress import ProgressBar
from bench.workloads import (
    LoadSpec,
    MixedTxnRequests,
    PutRequests,
    TxnPutRequests,
    split,
    stamped_value,
    value_stamp_ns,
    watched_keys,
)

BARRIER_TIMEOUT_S = 60.0
PROGRESS_EVERY = 64  # a power of two: the hot loop tests done & (PROGRESS_EVERY - 1)
# A worker whose CPU time exceeds this share of its wall time was the bottleneck itself.
CPU_BOUND_SHARE = 0.85


class LoadError(Exception):
    """The load could not run (unreachable endpoint, a worker failed)."""


@dataclass(slots=True)
class Series:
    """Samples of one kind: request start and end times (perf_counter seconds)."""

    starts: array = field(default_factory=lambda: array("d"))
    ends: array = field(default_factory=lambda: array("d"))


@dataclass(slots=True)
class WorkerResult:
    index: int
    series: dict[str, tuple[bytes, bytes]]
    errors: dict[str, int]
    cpu_s: float
    wall_s: float
    failure: str = ""


@dataclass(slots=True)
class LoadResult:
    """The merged run: one Summary per series, the raw end times for the throughput plot."""

    spec: LoadSpec
    summaries: dict[str, stats.Summary]
    ends_s: dict[str, list[float]]
    starts_s: dict[str, float]
    cpu_s: float
    cpu_share_max: float
    wall_s: float
    warnings: list[str]
    latencies_s: dict[str, list[float]] = field(default_factory=dict)


class Recorder:
    """Per-process sample sink; also publishes the completed count for the progress bar."""

    def __init__(self, progress: Any, index: int) -> None:
        self.series: dict[str, Series] = {}
        self.errors: Counter[str] = Counter()
        self.done = 0
        self.progress = progress
        self.index = index

    def get(self, label: str) -> Series:
        s = self.series.get(label)
        if s is None:
            s = self.series[label] = Series()
        return s

    def tick(self) -> None:
        self.done += 1
        if self.done % PROGRESS_EVERY == 0:
            self.progress[self.index] = self.done

    def error(self, err: BaseException) -> None:
        code = getattr(err, "code", None)
        details = getattr(err, "details", None)
        if callable(code) and callable(details):
            self.errors[f"{code().name}: {details()}"] += 1
        else:
            self.errors[f"{type(err).__name__}: {err}"] += 1
        self.tick()


class Budget:
    """How many more requests this process may start: a count, or a deadline."""

    def __init__(self, total: int, deadline_s: float) -> None:
        self.left = total
        self.deadline_s = deadline_s

    def take(self) -> bool:
        if self.deadline_s:
            return time.perf_counter() < self.deadline_s
        if self.left <= 0:
            return False
        self.left -= 1
        return True


class Pacer:
    """Spaces request starts 1/rate apart (shared by the tasks of one process)."""

    def __init__(self, rate: float) -> None:
        self.interval_s = 1.0 / rate
        self.next_s = 0.0

    async def wait(self) -> None:
        now = time.perf_counter()
        t = max(self.next_s, now)
        self.next_s = t + self.interval_s
        if t > now:
            await asyncio.sleep(t - now)


def worker_share(spec: LoadSpec, index: int) -> LoadSpec:
    """This worker's part of the run (clients, conns, total, rate), from the whole spec."""
    procs = spec.procs
    return replace(
        spec,
        clients=max(1, split(spec.clients, procs, index)),
        conns=max(1, split(spec.conns, procs, index)),
        total=split(spec.total, procs, index),
        rate=spec.rate / procs,
        streams=split(spec.streams, procs, index),
        seed=spec.seed * 1000 + index,
    )


# ---- worker side ---------------------------------------------------------------------------


async def _unary_task(
    call: Callable[..., Any],
    make: Callable[[], tuple[Series, bytes]],
    budget: Budget,
    pacer: Pacer | None,
    rec: Recorder,
    timeout_s: float,
) -> None:
    """One client: the hot loop. Kept flat (locals, no helper calls per request) because
    every microsecond here is the tool's CPU, not the server's."""
    perf = time.perf_counter
    take = budget.take
    progress, index = rec.progress, rec.index
    while take():
        if pacer is not None:
            await pacer.wait()
        series, req = make()
        t0 = perf()
        try:
            await call(req, timeout=timeout_s)
        except Exception as err:  # noqa: BLE001 - every failure is counted, by kind
            rec.error(err)
            continue
        t1 = perf()
        series.starts.append(t0)
        series.ends.append(t1)
        rec.done += 1
        if not rec.done & (PROGRESS_EVERY - 1):
            progress[index] = rec.done


def _request_maker(
    share: LoadSpec, index: int, rec: Recorder
) -> tuple[str, Callable[[], tuple[Series, bytes]]]:
    """The gRPC method and a request factory for a unary workload."""
    from client import wire
    from client.common import KV_PUT, KV_RANGE, KV_TXN

    rng = random.Random(share.seed)
    if share.workload == "put":
        puts, s_put = PutRequests(share, index, rng), rec.get("put")
        return KV_PUT, lambda: (s_put, puts.next())
    if share.workload == "range":
        req = wire.range_request(
            share.range_key,
            share.range_end,
            serializable=share.serializable,
            limit=share.range_limit,
        )
        s_range = rec.get("range")
        return KV_RANGE, lambda: (s_range, req)
    if share.workload == "txn-put":
        txns, s_txn = TxnPutRequests(share, index, rng), rec.get("txn-put")
        return KV_TXN, lambda: (s_txn, txns.next())
    if share.workload == "txn-mixed":
        mixed = MixedTxnRequests(share, index, rng)
        s_read, s_write = rec.get("read"), rec.get("write")

        def make() -> tuple[Series, bytes]:
            is_read, req = mixed.next()
            return (s_read if is_read else s_write), req

        return KV_TXN, make
    raise LoadError(f"unknown unary workload {share.workload!r}")


async def _run_unary(share: LoadSpec, index: int, clients: list[Any], rec: Recorder) -> None:
    path, make = _request_maker(share, index, rec)
    calls = [c.raw(path) for c in clients]
    deadline = time.perf_counter() + share.duration_s if share.duration_s > 0 else 0.0
    budget = Budget(share.total, deadline)
    pacer = Pacer(share.rate) if share.rate > 0 else None
    tasks = [
        _unary_task(calls[i % len(calls)], make, budget, pacer, rec, share.timeout_s)
        for i in range(share.clients)
    ]
    await asyncio.gather(*tasks)


async def _run_lease_keepalive(
    share: LoadSpec, clients: list[Any], rec: Recorder, timeout_s: float
) -> None:
    """Each client grants a lease (TTL lease_ttl_s), then times keepalive round trips: by
    default each on a new LeaseKeepAlive stream, as etcd's tool does (clientv3's
    KeepAliveOnce); with keepalive_stream, all on one long-lived stream per client."""
    from api.etcdserverpb import rpc_pb2 as pb

    deadline = time.perf_counter() + share.duration_s if share.duration_s > 0 else 0.0
    budget = Budget(share.total, deadline)
    pacer = Pacer(share.rate) if share.rate > 0 else None
    s = rec.get("keepalive")
    perf = time.perf_counter

    async def round_trip(stream: Any, req: Any) -> None:
        await asyncio.wait_for(stream.write(req), timeout_s)
        await asyncio.wait_for(stream.read(), timeout_s)

    async def one(client: Any) -> None:
        lease = await client.lease_grant(share.lease_ttl_s)
        req = pb.LeaseKeepAliveRequest(ID=lease.ID)
        shared = client.lease_keepalive() if share.keepalive_stream else None
        try:
            while budget.take():
                if pacer is not None:
                    await pacer.wait()
                t0 = perf()
                stream = shared or client.lease_keepalive()
                try:
                    await round_trip(stream, req)
                except Exception as err:  # noqa: BLE001 - counted by kind
                    rec.error(err)
                    if shared is not None:
                        return  # the long-lived stream is gone
                    continue
                finally:
                    if shared is None:
                        stream.cancel()
                s.starts.append(t0)
                s.ends.append(perf())
                rec.tick()
        finally:
            if shared is not None:
                shared.cancel()

    await asyncio.gather(*(one(clients[i % len(clients)]) for i in range(share.clients)))


def watch_plan(spec: LoadSpec) -> tuple[list[bytes], list[int]]:
    """The watched keys and, for each key, how many puts target it (puts go round-robin)."""
    keys = watched_keys(spec)
    puts_per_key = [0] * len(keys)
    for i in range(spec.put_total):
        puts_per_key[i % len(keys)] += 1
    return keys, puts_per_key


def watcher_key_index(spec: LoadSpec, stream_global: int, watcher: int) -> int:
    return (stream_global * spec.watchers_per_stream + watcher) % max(1, spec.watched_key_total)


def expected_events(spec: LoadSpec) -> int:
    """Events all watchers together must receive: each watcher gets every put to its key."""
    keys, puts_per_key = watch_plan(spec)
    total = 0
    for g in range(spec.streams):
        for w in range(spec.watchers_per_stream):
            total += puts_per_key[watcher_key_index(spec, g, w) % len(keys)]
    return total


async def _run_watch(
    share: LoadSpec, index: int, clients: list[Any], rec: Recorder, barrier: Any
) -> None:
    """Create watchers (timed), meet the other workers, then worker 0 puts while every worker
    counts the events its watchers receive, each timed from its put (stamped in the value)."""
    from api.etcdserverpb import rpc_pb2 as pb

    keys, puts_per_key = watch_plan(share)
    procs = share.procs
    streams: list[Any] = []
    expected = 0
    create = rec.get("watch-create")
    perf = time.perf_counter
    for k in range(share.streams):
        g = index + k * procs  # global stream number
        call = clients[k % len(clients)].watch()
        streams.append(call)
        for w in range(share.watchers_per_stream):
            ki = watcher_key_index(share, g, w)
            expected += puts_per_key[ki]
            req = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=keys[ki]))
            t0 = perf()
            await call.write(req)
            while not (await call.read()).created:
                pass
            create.starts.append(t0)
            create.ends.append(perf())
    got = 0
    all_in = asyncio.Event()
    if expected == 0:
        all_in.set()
    events = rec.get("events")

    async def reader(call: Any) -> None:
        nonlocal got
        while True:
            resp = await call.read()
            now = perf()
            for ev in resp.events:
                events.starts.append(value_stamp_ns(ev.kv.value) / 1e9)
                events.ends.append(now)
                rec.tick()
                got += 1
            if got >= expected:
                all_in.set()

    readers = [asyncio.create_task(reader(c)) for c in streams]
    await asyncio.get_running_loop().run_in_executor(None, barrier.wait, BARRIER_TIMEOUT_S)
    if index == 0:
        await _put_stamped(share, clients, rec, keys)
    try:
        await asyncio.wait_for(all_in.wait(), share.timeout_s)
    except TimeoutError:
        rec.errors[f"watch: {expected - got} of {expected} events not received"] += 1
    for t in readers:
        t.cancel()
    for c in streams:
        c.cancel()


async def _put_stamped(
    share: LoadSpec, clients: list[Any], rec: Recorder, keys: list[bytes]
) -> None:
    """The puts of the watch workloads: round-robin over the watched keys, each value
    carrying its send time."""
    from client import wire
    from client.common import KV_PUT

    calls = [c.raw(KV_PUT) for c in clients]
    pacer = Pacer(share.put_rate) if share.put_rate > 0 else None
    counter = iter(range(share.put_total))
    s = rec.get("put")
    perf = time.perf_counter

    async def putter(call: Any) -> None:
        for i in counter:
            if pacer is not None:
                await pacer.wait()
            t0 = perf()
            value = stamped_value(time.perf_counter_ns(), share.val_size)
            try:
                await call(wire.put_request(keys[i % len(keys)], value), timeout=share.timeout_s)
            except Exception as err:  # noqa: BLE001 - counted by kind
                rec.error(err)
                continue
            s.starts.append(t0)
            s.ends.append(perf())

    await asyncio.gather(*(putter(calls[i % len(calls)]) for i in range(max(1, share.clients))))


async def _worker(spec: LoadSpec, index: int, barrier: Any, progress: Any) -> WorkerResult:
    from client import AsyncClient

    share = worker_share(spec, index)
    rec = Recorder(progress, index)
    clients = [
        AsyncClient(spec.endpoints[(index + i * spec.procs) % len(spec.endpoints)])
        for i in range(share.conns)
    ]
    for c in clients:
        try:
            await c.wait_ready(spec.connect_timeout_s)
        except Exception as err:
            barrier.abort()
            raise LoadError(
                f"cannot connect to {c.target} within {spec.connect_timeout_s:g} s"
            ) from err
    await asyncio.get_running_loop().run_in_executor(None, barrier.wait, BARRIER_TIMEOUT_S)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if share.workload in ("watch", "watch-latency"):
        await _run_watch(share, index, clients, rec, barrier)
    elif share.workload == "lease-keepalive":
        await _run_lease_keepalive(share, clients, rec, share.timeout_s)
    else:
        await _run_unary(share, index, clients, rec)
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    progress[index] = rec.done
    for c in clients:
        await c.close()
    series = {k: (v.starts.tobytes(), v.ends.tobytes()) for k, v in rec.series.items()}
    return WorkerResult(index, series, dict(rec.errors), cpu_s, wall_s)


def worker_main(spec: LoadSpec, index: int, barrier: Any, progress: Any, out: Any) -> None:
    """Entry point of a worker process: runs the worker, always sends exactly one result."""
    try:
        result = asyncio.run(_worker(spec, index, barrier, progress))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which fails the run
        with contextlib.suppress(Exception):
            barrier.abort()
        result = WorkerResult(index, {}, {}, 0.0, 0.0, failure=f"{type(err).__name__}: {err}")
    out.put(result)


# ---- parent side ---------------------------------------------------------------------------


def default_procs(spec: LoadSpec) -> int:
    """One worker per core, never more than there are clients (or watch streams)."""
    cores = os.cpu_count() or 1
    parallel = spec.streams if spec.workload in ("watch", "watch-latency") else spec.clients
    return max(1, min(cores, parallel))


def progress_goal(spec: LoadSpec) -> int:
    if spec.workload in ("watch", "watch-latency"):
        return expected_events(spec)
    return spec.total


def run_load(spec: LoadSpec, *, show_progress: bool | None = None) -> LoadResult:
    """Runs `spec` (spec.procs worker processes) and returns the merged result."""
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(spec.procs + 1)
    progress = ctx.Array("q", spec.procs, lock=False)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=worker_main, args=(spec, i, barrier, progress, out), daemon=True)
        for i in range(spec.procs)
    ]
    for p in procs:
        p.start()
    try:
        results = _collect(spec, procs, barrier, progress, out, show_progress)
    finally:
        for p in procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.kill()
                p.join()
    failures = [r.failure for r in results if r.failure]
    if failures:
        raise LoadError("worker failed: " + "; ".join(sorted(set(failures))))
    return merge(spec, results)


def _collect(
    spec: LoadSpec, procs: list[Any], barrier: Any, progress: Any, out: Any, show: bool
) -> list[WorkerResult]:
    results: list[WorkerResult] = []
    phases = 2 if spec.workload in ("watch", "watch-latency") else 1
    try:
        for _ in range(phases):
            barrier.wait(BARRIER_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - a worker aborted: its result says why
        pass
    bar = ProgressBar(progress_goal(spec) if not spec.duration_s else 0, spec.duration_s, show)
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=0.1))
        except queue_mod.Empty:
            if not any(p.is_alive() for p in procs) and out.empty():
                break
        bar.update(sum(progress[:]))
    bar.finish(sum(progress[:]))
    missing = len(procs) - len(results)
    if missing:
        results.append(WorkerResult(-1, {}, {}, 0, 0, failure=f"{missing} workers died"))
    return results


def merge(spec: LoadSpec, results: list[WorkerResult]) -> LoadResult:
    starts: dict[str, array] = {}
    ends: dict[str, array] = {}
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
        for label, (s_bytes, e_bytes) in r.series.items():
            starts.setdefault(label, array("d")).frombytes(s_bytes)
            ends.setdefault(label, array("d")).frombytes(e_bytes)
    summaries: dict[str, stats.Summary] = {}
    first: dict[str, float] = {}
    latencies: dict[str, list[float]] = {}
    error_total = sum(errors.values())
    for label in starts:
        st, en = starts[label], ends[label]
        lats = latencies[label] = [e - s for s, e in zip(st, en, strict=True)]
        first[label] = min(st) if st else 0.0
        total_s = (max(en) - first[label]) if en else 0.0
        summaries[label] = stats.summarize(lats, total_s, error_total, dict(errors))
    cpu_s = sum(r.cpu_s for r in results)
    wall_s = max((r.wall_s for r in results), default=0.0)
    share_max = max((r.cpu_s / r.wall_s for r in results if r.wall_s > 0), default=0.0)
    warnings = cpu_warnings(spec, cpu_s, wall_s, share_max)
    if not summaries and errors:
        summaries["errors"] = stats.summarize([], wall_s, error_total, dict(errors))
    ends_list = {k: list(v) for k, v in ends.items()}
    return LoadResult(
        spec, summaries, ends_list, first, cpu_s, share_max, wall_s, warnings, latencies
    )


def cpu_warnings(spec: LoadSpec, cpu_s: float, wall_s: float, share_max: float) -> list[str]:
    """Says when the tool itself, not the server, limited the throughput."""
    out = []
    if share_max >= CPU_BOUND_SHARE:
        out.append(
            f"warning: a petra-bench worker used {share_max:.0%} of a core: the tool may be "
            f"the limit (add --procs, or run it on another machine)"
        )
    cores = os.cpu_count() or 1
    if wall_s > 0 and cpu_s / wall_s >= CPU_BOUND_SHARE * cores:
        out.append(
            f"warning: petra-bench used {cpu_s / wall_s:.1f} of {cores} cores: the machine's "
            f"CPU is shared with the server, figures are the tool's limit as much as the server's"
        )
    return out
