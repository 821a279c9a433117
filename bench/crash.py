"""Crash-recovery mode: concurrent writers, kill -9 at seeded random moments, restart, and
a verdict over the recorded history (bench.verify).

Theory of operation. One asyncio loop runs W writer tasks (puts and multi-key txns, every
value unique), one watcher that resumes from its last revision + 1 whenever its stream
breaks, and the nemesis: for each cycle it waits a seeded random delay, notes the highest
acknowledged revision, kills the server's process group with SIGKILL, restarts the same
command on the same data directory and times kill -> first successful linearizable read.
Afterwards it stops the writers, lets the watcher catch up, reads every acknowledged pair
back at its revision, reads the whole history of the prefix with a watch from revision 1,
and hands the History to verify(). Everything goes through the gRPC API, so the same run
judges petra and etcd alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.history import Event, History, Observation, Recovery, Write
from bench.servers import ServerError, ServerProcess, make_server
from bench.stats import median
from bench.verify import verify

OP_TIMEOUT_S = 5.0
RETRY_PAUSE_S = 0.02  # between failed attempts while the server is down
RECOVERY_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 0.25  # bounds how late a recovery can be noticed
CATCH_UP_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class CrashConfig:
    cycles: int = 3
    writers: int = 8
    keys: int = 50
    txn_percent: int = 25
    kill_after_min_s: float = 0.3
    kill_after_max_s: float = 1.5
    seed: int = 1
    prefix: bytes = b"petra-bench/crash/"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "crash",
        help="kill -9 / restart cycles under load, then verify the history",
        description="Server command placeholders: {data_dir} {client_url} {peer_url} "
        "{client_port} {peer_port} {name}. Without a command, a fresh petra (or --server).",
    )
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--keys", type=int, default=50, help="distinct keys written")
    p.add_argument("--txn-percent", type=int, default=25)
    p.add_argument("--kill-after-min", type=float, default=0.3, help="seconds")
    p.add_argument("--kill-after-max", type=float, default=1.5, help="seconds")
    p.add_argument("--seed", type=int, default=0, help="0: pick one (printed)")
    p.add_argument("--server", choices=("petra", "etcd"), default="petra")
    p.add_argument("--data-dir", help="keep the server's data here (default: a temp dir)")
    p.add_argument("--json", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- server command")
    p.set_defaults(run=cmd_crash)


class Recorder:
    """Collects the history; op ids and values are unique over the run."""

    def __init__(self) -> None:
        self.history = History()
        self.max_acked_revision = 0
        self.next_op = 0

    def op_id(self) -> int:
        self.next_op += 1
        return self.next_op

    def write(self, w: Write) -> None:
        self.history.writes.append(w)
        if w.acked:
            self.max_acked_revision = max(self.max_acked_revision, w.revision)
            self.history.observations.append(Observation(w.start_s, w.end_s, w.revision))


def _error_text(err: BaseException) -> str:
    code = getattr(err, "code", None)
    return code().name if callable(code) else type(err).__name__


async def writer(
    index: int, client: Any, cfg: CrashConfig, rec: Recorder, stop: asyncio.Event
) -> None:
    """Puts and txns on random keys with unique values until `stop`."""
    from api.etcdserverpb import rpc_pb2 as pb

    rng = random.Random(cfg.seed * 7919 + index)
    seq = 0
    while not stop.is_set():
        n = 2 + rng.randrange(2) if rng.randrange(100) < cfg.txn_percent else 1
        keys = rng.sample(range(cfg.keys), min(n, cfg.keys))
        puts = []
        for k in keys:
            seq += 1
            puts.append((cfg.prefix + b"k%d" % k, b"w%d-%d" % (index, seq)))
        op_id = rec.op_id()
        t0 = time.monotonic()
        try:
            if len(puts) == 1:
                resp = await client.kv.Put(
                    pb.PutRequest(key=puts[0][0], value=puts[0][1]), timeout=OP_TIMEOUT_S
                )
            else:
                ops = [pb.RequestOp(request_put=pb.PutRequest(key=k, value=v)) for k, v in puts]
                resp = await client.kv.Txn(pb.TxnRequest(success=ops), timeout=OP_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - outcome unknown: recorded as unacknowledged
            rec.write(Write(op_id, tuple(puts), t0, time.monotonic(), False, 0, _error_text(err)))
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        rec.write(Write(op_id, tuple(puts), t0, time.monotonic(), True, resp.header.revision))


async def watcher(client: Any, cfg: CrashConfig, rec: Recorder, stop: asyncio.Event) -> None:
    """Watches the prefix from revision 1; on a broken stream resumes from last + 1."""
    from api.etcdserverpb import rpc_pb2 as pb
    from client.common import prefix_end

    h = rec.history
    next_rev = h.watch_start_revision
    streams = 0
    while not stop.is_set():
        call = client.watch()
        try:
            req = pb.WatchCreateRequest(
                key=cfg.prefix, range_end=prefix_end(cfg.prefix), start_revision=next_rev
            )
            await call.write(pb.WatchRequest(create_request=req))
            streams += 1
            while not stop.is_set():
                resp = await call.read()
                if resp.created and streams > 1:
                    h.watch_resumes += 1  # a new stream is up after a break
                if resp.canceled:
                    raise RuntimeError(f"watch canceled: {resp.cancel_reason}")
                for ev in resp.events:
                    h.watched.append(Event(ev.kv.mod_revision, ev.kv.key, ev.kv.value, ev.type))
                    next_rev = ev.kv.mod_revision + 1
        except Exception as err:  # noqa: BLE001 - server down: resume from next_rev
            kind = _error_text(err)
            if kind == "UNIMPLEMENTED" and not h.watched:
                h.watch_supported = False  # never worked: the endpoint has no Watch
                return
            h.watch_errors[kind] = h.watch_errors.get(kind, 0) + 1
            await asyncio.sleep(RETRY_PAUSE_S)
        finally:
            call.cancel()


async def wait_linearizable_read(client: Any, deadline_s: float) -> tuple[float, int]:
    """Polls a linearizable Range until one succeeds: (its end time, its header revision)."""
    from api.etcdserverpb import rpc_pb2 as pb

    req = pb.RangeRequest(key=b"petra-bench/probe")
    while True:
        t0 = time.monotonic()
        try:
            resp = await client.kv.Range(req, timeout=PROBE_TIMEOUT_S)
            return time.monotonic(), resp.header.revision
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline_s:
                raise ServerError("no successful read after restart") from None
            await asyncio.sleep(max(0.0, RETRY_PAUSE_S - (time.monotonic() - t0)))


async def nemesis(
    server: ServerProcess, probe: Any, cfg: CrashConfig, rec: Recorder, out: Any
) -> None:
    rng = random.Random(cfg.seed)
    for cycle in range(1, cfg.cycles + 1):
        delay_s = rng.uniform(cfg.kill_after_min_s, cfg.kill_after_max_s)
        await asyncio.sleep(delay_s)
        acked_before = rec.max_acked_revision
        kill_s = time.monotonic()
        server.kill()
        server.start()
        ready_s, revision = await wait_linearizable_read(probe, kill_s + RECOVERY_TIMEOUT_S)
        r = Recovery(cycle, kill_s, ready_s, acked_before, revision)
        rec.history.recoveries.append(r)
        rec.history.observations.append(Observation(kill_s, ready_s, revision))
        print(
            f"cycle {cycle}: killed after {delay_s:.2f}s, recovered in {r.recovery_s:.3f}s "
            f"(revision {revision}, {acked_before} acknowledged before the kill)",
            file=out,
            flush=True,
        )


async def read_back(client: Any, cfg: CrashConfig, rec: Recorder) -> None:
    """The final Range, every acknowledged pair at its revision, and the full history."""
    from api.etcdserverpb import rpc_pb2 as pb
    from client.common import prefix_end

    h = rec.history
    t0 = time.monotonic()
    final = await client.kv.Range(
        pb.RangeRequest(key=cfg.prefix, range_end=prefix_end(cfg.prefix)), timeout=OP_TIMEOUT_S
    )
    h.observations.append(Observation(t0, time.monotonic(), final.header.revision))
    h.final = {kv.key: (kv.value, kv.mod_revision) for kv in final.kvs}
    h.final_revision = final.header.revision
    pairs = {(k, w.revision) for w in h.writes if w.acked for k, _ in w.puts}
    sem = asyncio.Semaphore(32)

    async def point(key: bytes, revision: int) -> None:
        async with sem:
            resp = await client.kv.Range(
                pb.RangeRequest(key=key, revision=revision), timeout=OP_TIMEOUT_S
            )
        kv = resp.kvs[0] if resp.kvs else None
        h.point_reads[(key, revision)] = (kv.value, kv.mod_revision) if kv else None

    await asyncio.gather(*(point(k, r) for k, r in sorted(pairs)))
    h.audit = await read_history(client, cfg, max((m for _, m in h.final.values()), default=0))


async def read_history(client: Any, cfg: CrashConfig, upto: int) -> list[Event]:
    """Every event of the prefix from revision 1 through `upto`, without the Watch API (so
    the watcher is checked against an independent account): the keys a Range at revision r
    shows with mod_revision == r are exactly the puts of revision r."""
    from api.etcdserverpb import rpc_pb2 as pb
    from client.common import prefix_end

    end = prefix_end(cfg.prefix)
    by_revision: dict[int, list[Event]] = {}
    sem = asyncio.Semaphore(32)

    async def at(r: int) -> None:
        req = pb.RangeRequest(key=cfg.prefix, range_end=end, revision=r, min_mod_revision=r)
        async with sem:
            resp = await client.kv.Range(req, timeout=OP_TIMEOUT_S)
        by_revision[r] = [
            Event(kv.mod_revision, kv.key, kv.value) for kv in resp.kvs if kv.mod_revision == r
        ]

    await asyncio.gather(*(at(r) for r in range(2, upto + 1)))
    return [ev for r in sorted(by_revision) for ev in by_revision[r]]


async def run_crash(server: ServerProcess, cfg: CrashConfig, out: Any = sys.stderr) -> History:
    """Starts `server`, runs the cycles, reads everything back; always stops the server."""
    from client import AsyncClient

    rec = Recorder()
    try:
        await asyncio.get_running_loop().run_in_executor(None, server.launch)
        async with AsyncClient(server.endpoint) as wc, AsyncClient(server.endpoint) as probe:
            stop_writers, stop_watch = asyncio.Event(), asyncio.Event()
            clients = [AsyncClient(server.endpoint) for _ in range(min(cfg.writers, 4))]
            tasks = [
                asyncio.create_task(writer(i, clients[i % len(clients)], cfg, rec, stop_writers))
                for i in range(cfg.writers)
            ]
            watch_task = asyncio.create_task(watcher(wc, cfg, rec, stop_watch))
            await nemesis(server, probe, cfg, rec, out)
            await asyncio.sleep(0.2)  # a little load after the last restart
            stop_writers.set()
            await asyncio.gather(*tasks)
            await read_back(probe, cfg, rec)
            await _wait_watcher(rec, CATCH_UP_TIMEOUT_S)
            stop_watch.set()
            watch_task.cancel()
            await asyncio.gather(watch_task, return_exceptions=True)
            for c in clients:
                await c.close()
    finally:
        server.stop()
    return rec.history


async def _wait_watcher(rec: Recorder, timeout_s: float) -> None:
    """Lets the watcher deliver everything up to the last revision of the prefix."""
    h = rec.history
    upto = max((m for _, m in h.final.values()), default=0)
    deadline = time.monotonic() + timeout_s
    while (
        h.watch_supported
        and (not h.watched or h.watched[-1].revision < upto)
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.02)


def cmd_crash(a: argparse.Namespace) -> int:
    seed = a.seed or random.SystemRandom().randrange(1, 1 << 31)
    cfg = CrashConfig(
        cycles=a.cycles,
        writers=a.writers,
        keys=a.keys,
        txn_percent=a.txn_percent,
        kill_after_min_s=a.kill_after_min,
        kill_after_max_s=a.kill_after_max,
        seed=seed,
    )
    command = [c for c in a.command if c != "--"] or None
    print(f"petra-bench crash: seed {seed} (replay with --seed {seed})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="petra-bench-crash-") as tmp:
        workdir = Path(a.data_dir) if a.data_dir else Path(tmp)
        server = make_server("custom" if command else a.server, workdir, command)
        try:
            history = asyncio.run(run_crash(server, cfg))
        except ServerError as err:
            print(f"petra-bench crash: {err}", file=sys.stderr)
            return 1
    verdict = verify(history)
    times = [r.recovery_s for r in history.recoveries]
    if a.json:
        print(json.dumps(verdict_json(verdict, times, seed), indent=2))
    else:
        if times:
            print(
                f"recovery (kill -> first linearizable read): min {min(times):.3f}s, "
                f"median {median(times):.3f}s, max {max(times):.3f}s over {len(times)} cycles"
            )
        print(f"watcher resumed {history.watch_resumes} times")
        print(verdict.summary())
    return 0 if verdict.ok else 3


def verdict_json(v: Any, recovery_s: list[float], seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "ok": v.ok,
        "acknowledged": v.acknowledged,
        "verified": v.verified,
        "lost": v.lost,
        "unacked_applied": v.unacked_applied,
        "unacked_absent": v.unacked_absent,
        "watch_events": v.watch_events,
        "watch_duplicates": v.watch_duplicates,
        "watch_missed": v.watch_missed,
        "recovery_s": recovery_s,
        "problems": {k: len(m) for k, m in v.problems.items()},
    }
