"""Crash tests: SIGKILL a node under load, restart it, and check nothing acknowledged was lost.

Theory of operation. One node lives through many crash cycles. In each cycle a few writer
threads send puts and two-key txns, every one with a value never used before, and record each
acknowledged write with its revision; a watcher thread follows every event from the cycle's
first revision. The node is killed either by the test (SIGKILL once a seeded number of writes
has been acknowledged: a random moment that depends on progress, not on a clock) or by itself
at a failpoint (PETRA_FAILPOINTS=name:kill@n, petra only). After the restart:
- revisions never go back: the current revision is at least every acknowledged revision;
- every acknowledged write is in the history, as a PUT of its value at its revision;
- no value appears twice in the history (nothing applied twice);
- a txn is all or nothing: both of its keys changed in the same revision, or neither;
- the watcher, resumed from its last revision + 1, sees exactly the history: each event
  once, in order, none missing;
- a compaction of the previous cycles' history, sent while the load runs, is durable once
  acknowledged and never reaches past the revision asked for;
every third cycle also defragments during the load (a kill mid-defrag must lose nothing).
The history is read with a watch from the cycle's first revision (never compacted).
A failure names the seed and the cycle; the seed replays the same kill points.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import queue
import random
import signal
import threading
from collections.abc import Iterator

import grpc
import pytest

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from api.mvccpb import kv_pb2
from server import storage_thread
from tests import nodes
from tests.nodes import Node, NodeFailed, make_node, wait_for
from wal.failpoints import KNOWN

node_kind = nodes.node_kind

WRITERS = 3
RPC_TIMEOUT_S = 5.0
LOAD_TIMEOUT_S = 20.0
HISTORY_TIMEOUT_S = 10.0
SEED = 20261204
# Short Raft timers: a restarted one-member node elects itself in ~0.1 s instead of ~1 s. A
# small snapshot count makes snapshots (and the WAL release after them) part of every cycle.
FAST_ELECTION = ("--heartbeat-interval=10", "--election-timeout=100", "--snapshot-count=25")


@dataclasses.dataclass
class Ack:
    keys: tuple[bytes, ...]  # one key for a put, two for a txn
    value: bytes
    revision: int


@dataclasses.dataclass
class CycleLoad:
    """What the writers and the watcher saw during one cycle."""

    acks: list[Ack] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    watched: list[kv_pb2.Event] = dataclasses.field(default_factory=list)
    watch_ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    compacted: int = 0  # the revision of an acknowledged compaction during the cycle

    def ack(self, a: Ack) -> None:
        with self.lock:
            self.acks.append(a)

    def count(self) -> int:
        with self.lock:
            return len(self.acks)


def writer(endpoint: str, load: CycleLoad, cycle: int, wid: int, seed: int) -> None:
    """Puts and txns with unique values until told to stop or the node dies."""
    r = random.Random(seed)
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        i = 0
        while not load.stop.is_set():
            i += 1
            value = f"c{cycle}-w{wid}-{i}".encode()
            try:
                if r.random() < 0.7:
                    key = f"k/{wid}/{r.randrange(8)}".encode()
                    resp = kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=RPC_TIMEOUT_S)
                    load.ack(Ack((key,), value, resp.header.revision))
                else:
                    pair = (f"tx/{wid}/a".encode(), f"tx/{wid}/b".encode())
                    ops = [
                        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=value))
                        for k in pair
                    ]
                    txn = rpc_pb2.TxnRequest(success=ops)
                    resp = kv.Txn(txn, timeout=RPC_TIMEOUT_S)
                    assert resp.succeeded
                    load.ack(Ack(pair, value, resp.header.revision))
            except grpc.RpcError:
                return  # the node is gone: this write is unknown, not acknowledged


def watcher(endpoint: str, load: CycleLoad, start_revision: int) -> None:
    """Follows every event from start_revision until the node dies."""
    create = rpc_pb2.WatchCreateRequest(key=b"\0", range_end=b"\0", start_revision=start_revision)
    requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
    requests.put(rpc_pb2.WatchRequest(create_request=create))
    with grpc.insecure_channel(endpoint) as ch:
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(iter(requests.get, None))
        try:
            for resp in stream:
                if resp.created:
                    load.watch_ready.set()
                load.watched.extend(resp.events)
        except grpc.RpcError:
            pass  # the node died: the watcher resumes after the restart
        finally:
            load.watch_ready.set()
            requests.put(None)


def compactor(endpoint: str, load: CycleLoad, revision: int) -> None:
    """Compacts the previous cycles' history while the load runs, so a kill can land in the
    middle of a compaction (etcd#17780: revision went back after such a crash)."""
    with grpc.insecure_channel(endpoint) as ch:
        try:
            rpc_pb2_grpc.KVStub(ch).Compact(
                rpc_pb2.CompactionRequest(revision=revision), timeout=RPC_TIMEOUT_S
            )
            load.compacted = revision
        except grpc.RpcError:
            pass  # killed before the answer: the compaction may or may not have happened


def defragmenter(endpoint: str) -> None:
    """Defragments while the load runs, so a kill can land mid-defrag (etcd#14685)."""
    with grpc.insecure_channel(endpoint) as ch:
        try:
            stub = rpc_pb2_grpc.MaintenanceStub(ch)
            stub.Defragment(rpc_pb2.DefragmentRequest(), timeout=RPC_TIMEOUT_S * 2)
        except grpc.RpcError:
            pass  # killed meanwhile, or refused while busy: either way the data must survive


def check_compaction(n: Node, load: CycleLoad, context: str) -> None:
    """An acknowledged compaction survived the crash, and went no further than asked."""
    if not load.compacted:
        return
    with grpc.insecure_channel(n.endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=load.compacted), timeout=10)
        if load.compacted > 1:
            below = rpc_pb2.RangeRequest(key=b"k", revision=load.compacted - 1)
            with pytest.raises(grpc.RpcError) as info:
                kv.Range(below, timeout=10)
            assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE, context


def current_revision(n: Node) -> int:
    with grpc.insecure_channel(n.endpoint) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\0"), timeout=10)
        return int(resp.header.revision)


def read_history(n: Node, start: int, end: int) -> list[kv_pb2.Event]:
    """Every event with start <= revision <= end, through a watch."""
    if end < max(start, 2):  # revision 1 is the empty store: no event has it
        return []
    create = rpc_pb2.WatchCreateRequest(key=b"\0", range_end=b"\0", start_revision=start)
    events: list[kv_pb2.Event] = []
    with grpc.insecure_channel(n.endpoint) as ch:
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(
            iter([rpc_pb2.WatchRequest(create_request=create)]), timeout=HISTORY_TIMEOUT_S
        )
        try:
            for resp in stream:
                assert not resp.canceled, f"history watch canceled: {resp}"
                events.extend(resp.events)
                if events and events[-1].kv.mod_revision >= end:
                    stream.cancel()
                    break
        except grpc.RpcError as e:
            last = events[-1].kv.mod_revision if events else None
            raise AssertionError(
                f"watch from {start} ended ({e.code()}) at revision {last}, "
                f"before the current revision {end}: {len(events)} events"
            ) from None
    return events


def check_cycle(history: list[kv_pb2.Event], load: CycleLoad, resumed: list[kv_pb2.Event],
                revision_after: int, context: str) -> None:  # fmt: skip
    """The invariants of the module docstring, for one cycle."""
    max_ack = max((a.revision for a in load.acks), default=0)
    assert revision_after >= max_ack, f"{context}: revision went back {max_ack}->{revision_after}"
    put_at: dict[tuple[bytes, bytes], int] = {}
    for e in history:
        if e.type == kv_pb2.Event.PUT:
            ident = (e.kv.key, e.kv.value)
            assert ident not in put_at, f"{context}: {ident} applied twice"
            put_at[ident] = e.kv.mod_revision
    for a in load.acks:
        for key in a.keys:
            got = put_at.get((key, a.value))
            assert got == a.revision, (
                f"{context}: acknowledged write {key!r}={a.value!r}@{a.revision} "
                f"{'missing' if got is None else f'at {got}'} after restart"
            )
    by_value: dict[bytes, set[int]] = {}
    count: dict[bytes, int] = {}
    for e in history:
        if e.kv.key.startswith(b"tx/"):
            by_value.setdefault(e.kv.value, set()).add(e.kv.mod_revision)
            count[e.kv.value] = count.get(e.kv.value, 0) + 1
    for value, revs in by_value.items():
        assert len(revs) == 1 and count[value] == 2, f"{context}: txn {value!r} not atomic"
    seen = [(e.kv.key, e.kv.mod_revision) for e in load.watched + resumed]
    want = [(e.kv.key, e.kv.mod_revision) for e in history]
    assert seen == want, f"{context}: resumed watcher saw {len(seen)} events, history {len(want)}"


def try_start(n: Node, failpoint: str | None) -> bool:
    """Start with the failpoint armed; False if the failpoint killed it during start-up (a
    crash during recovery or the first election is a crash moment like any other)."""
    n.env = {"PETRA_FAILPOINTS": failpoint} if failpoint else {}
    try:
        n.start()
    except NodeFailed:
        assert n.proc is not None
        if failpoint is None or n.proc.returncode != -signal.SIGKILL:
            raise
        return False
    return True


def run_load(n: Node, cycle: int, r: random.Random, failpoint: str | None,
             context: str, graceful: bool = False) -> tuple[int, CycleLoad]:  # fmt: skip
    """Load the running node until it crashes (by the test or by its armed failpoint), or, if
    graceful, until it is stopped by SIGTERM in the middle of the load."""
    start = current_revision(n) + 1
    load = CycleLoad()
    threads = [threading.Thread(target=watcher, args=(n.endpoint, load, start), daemon=True)]
    threads[0].start()
    assert load.watch_ready.wait(10), f"{context}: watcher not created"
    if start > 2:
        compaction = (n.endpoint, load, start - 1)
        threads.append(threading.Thread(target=compactor, args=compaction, daemon=True))
        threads[-1].start()
    if cycle % 3 == 2:
        threads.append(threading.Thread(target=defragmenter, args=(n.endpoint,), daemon=True))
        threads[-1].start()
    for wid in range(WRITERS):
        args = (n.endpoint, load, cycle, wid, r.randrange(1 << 30))
        threads.append(threading.Thread(target=writer, args=args, daemon=True))
        threads[-1].start()
    try:
        if failpoint:
            wait_for(lambda: not n.alive(), LOAD_TIMEOUT_S, f"{context}: failpoint to fire")
        else:
            target = r.randint(3, 60)
            wait_for(lambda: load.count() >= target, LOAD_TIMEOUT_S, f"{context}: {target} acks")
            if graceful:
                clean = 0 if n.kind == "petra" else -signal.SIGTERM
                assert n.stop() == clean, f"{context}: SIGTERM under load was not a clean exit"
    finally:
        n.kill9()
        load.stop.set()
        for t in threads:
            t.join(RPC_TIMEOUT_S * 3)
    return start, load


def verify(n: Node, start: int, load: CycleLoad, previous_revision: int, context: str) -> int:
    """On the restarted node: the cycle's invariants; returns the current revision."""
    revision_after = current_revision(n)
    assert revision_after >= previous_revision, f"{context}: revision went back"
    last_seen = load.watched[-1].kv.mod_revision if load.watched else start - 1
    resumed = read_history(n, last_seen + 1, revision_after)
    history = read_history(n, start, revision_after)
    check_cycle(history, load, resumed, revision_after, context)
    check_compaction(n, load, context)
    return revision_after


def _arm(failpoint: str, r: random.Random) -> str:
    """name:kill@n with a seeded n: up to the 12th write, or the 3rd snapshot."""
    return f"{failpoint}:kill@{r.randint(1, 3 if 'snapshot' in failpoint else 12)}"


def crash_cycles(n: Node, cycles: int, seed: int, failpoints: list[str] | None = None) -> int:
    """Runs the cycles; returns the number of acknowledged writes checked. The restart that
    verifies a cycle is also the start of the next one (armed with its failpoint): the
    verification only reads, so it cannot fire a write-path failpoint."""
    r = random.Random(seed)
    plan: list[str | None] = [None] * cycles
    if failpoints:
        plan = [_arm(failpoints[c % len(failpoints)], r) for c in range(cycles)]
    revision = 0
    checked = 0
    serving = try_start(n, plan[0])
    for cycle in range(cycles):
        context = f"seed {seed} cycle {cycle} ({n.kind}, {plan[cycle] or 'SIGKILL by test'})"
        if serving:
            start, load = run_load(n, cycle, r, plan[cycle], context)
        else:
            start, load = revision + 1, CycleLoad()  # it died while starting
        following = plan[cycle + 1] if cycle + 1 < cycles else None
        serving = try_start(n, following)
        if not serving:  # the next failpoint fired at start-up: verify on a clean start
            n.env = {}
            n.start()
        revision = verify(n, start, load, revision, context)
        if not serving:
            n.kill9()
        checked += len(load.acks)
    n.stop()
    return checked


@pytest.fixture
def crash_node(node_kind: str, tmp_path: pathlib.Path) -> Iterator[Node]:
    n = make_node(node_kind, tmp_path, extra_args=FAST_ELECTION)
    try:
        yield n
    finally:
        n.kill9()


def test_sigkill_at_random_moments(crash_node: Node) -> None:
    """SIGKILL after a seeded number of acknowledged writes, then restart and check (petra:
    26 cycles, 50 with the failpoint tests; etcd: 6 cycles, which proves the checks pass on a
    correct server)."""
    cycles = 26 if crash_node.kind == "petra" else 6
    checked = crash_cycles(crash_node, cycles, SEED)
    assert checked >= cycles * 3


# The durability steps of petra (wal/failpoints.py and server/storage_thread.py), except the
# WAL's renames: they happen when a data dir is created and when a 64 MiB segment is cut, and
# these short cycles of restarts never reach either.
FAILPOINTS = [
    *(name for name in KNOWN if name not in ("wal.before_rename", "wal.after_rename")),
    storage_thread.BEFORE_SAVE,
    storage_thread.AFTER_SAVE,
    storage_thread.BEFORE_APPLY,
    storage_thread.AFTER_APPLY,
]


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_kill_at_failpoint(failpoint: str, tmp_path: pathlib.Path) -> None:
    """petra kills itself at a durability step (2 cycles each, seeded hit count); restart and
    check."""
    n = make_node("petra", tmp_path, extra_args=FAST_ELECTION)
    try:
        crash_cycles(n, 2, SEED + FAILPOINTS.index(failpoint), [failpoint])
    finally:
        n.kill9()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sigkill_long(seed: int, tmp_path: pathlib.Path) -> None:
    """Long run: 50 cycles of random kills, then 50 of failpoints, on petra (slow)."""
    for phase, failpoints in (("random", None), ("failpoints", FAILPOINTS)):
        n = make_node("petra", tmp_path / phase, extra_args=FAST_ELECTION)
        try:
            crash_cycles(n, 50, seed, failpoints)
        finally:
            n.kill9()


def _put_event(key: bytes, value: bytes, revision: int) -> kv_pb2.Event:
    kv = kv_pb2.KeyValue(key=key, value=value, mod_revision=revision)
    return kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv)


def test_checker_catches_violations() -> None:
    """check_cycle fails on a lost write, a write at the wrong revision, a duplicate, a torn
    txn, a watcher gap and a revision that went back; and passes on a consistent cycle."""
    history = [
        _put_event(b"k/0/1", b"v1", 2),
        _put_event(b"tx/0/a", b"t1", 3),
        _put_event(b"tx/0/b", b"t1", 3),
        _put_event(b"k/0/1", b"v2", 4),
    ]
    load = CycleLoad(acks=[Ack((b"k/0/1",), b"v1", 2), Ack((b"tx/0/a", b"tx/0/b"), b"t1", 3)])
    load.watched = history[:2]
    check_cycle(history, load, history[2:], 4, "ok")
    torn = [history[0], history[1], history[3]]
    dup = history + [_put_event(b"k/0/1", b"v1", 5)]
    # name: (history, acks, what the watcher saw, revision after restart, expected message)
    bad_cases = {
        "lost": (history, [Ack((b"k/0/9",), b"gone", 3)], history, 4, "missing"),
        "wrong revision": (history, [Ack((b"k/0/1",), b"v2", 3)], history, 4, "at 4"),
        "duplicate": (dup, [], dup, 5, "applied twice"),
        "torn txn": (torn, [], torn, 4, "not atomic"),
        "watcher gap": (history, [], history[:1] + history[2:], 4, "resumed watcher"),
        "revision back": (history, [Ack((b"k/0/1",), b"v1", 9)], history, 4, "went back"),
    }
    for name, (hist, acks, seen, revision, message) in bad_cases.items():
        broken = CycleLoad(acks=acks)
        broken.watched = seen
        with pytest.raises(AssertionError, match=message):
            check_cycle(hist, broken, [], revision, name)


def _ttl(kv_lease: rpc_pb2_grpc.LeaseStub, lease_id: int) -> tuple[int, list[bytes]]:
    resp = kv_lease.LeaseTimeToLive(
        rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=True), timeout=10
    )
    return resp.grantedTTL if resp.TTL > 0 else -1, sorted(resp.keys)


def test_leases_survive_sigkill(crash_node: Node) -> None:
    """Granted leases, their keys and an acknowledged revoke survive SIGKILL; a short lease
    still expires after the restart and takes its key with it."""
    n = crash_node
    n.start()
    with grpc.insecure_channel(n.endpoint) as ch:
        lease, kv = rpc_pb2_grpc.LeaseStub(ch), rpc_pb2_grpc.KVStub(ch)
        for lease_id in (0x10, 0x11, 0x12):
            lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=600), timeout=10)
            for i in range(3):
                key = f"lease/{lease_id:x}/{i}".encode()
                kv.Put(rpc_pb2.PutRequest(key=key, value=b"v", lease=lease_id), timeout=10)
        lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=0x20, TTL=2), timeout=10)
        kv.Put(rpc_pb2.PutRequest(key=b"short", value=b"v", lease=0x20), timeout=10)
        lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=0x10), timeout=10)
    n.kill9()
    n.start()
    with grpc.insecure_channel(n.endpoint) as ch:
        lease, kv = rpc_pb2_grpc.LeaseStub(ch), rpc_pb2_grpc.KVStub(ch)
        assert _ttl(lease, 0x10) == (-1, [])
        for lease_id in (0x11, 0x12):
            keys = [f"lease/{lease_id:x}/{i}".encode() for i in range(3)]
            assert _ttl(lease, lease_id) == (600, keys)
        left = kv.Range(rpc_pb2.RangeRequest(key=b"lease/", range_end=b"lease0"), timeout=10)
        assert [x.key for x in left.kvs] == [f"lease/{i:x}/{j}".encode() for i in (0x11, 0x12)
                                             for j in range(3)]  # fmt: skip

        def short_key_gone() -> bool:
            return kv.Range(rpc_pb2.RangeRequest(key=b"short"), timeout=10).count == 0

        wait_for(short_key_gone, 20, "the 2 s lease to expire after the restart")
        assert _ttl(lease, 0x20) == (-1, [])
    n.stop()


def test_sigterm_under_load(crash_node: Node) -> None:
    """SIGTERM in the middle of the load is a clean exit (status 0 for petra) and keeps every
    acknowledged write, like a crash must (3 cycles)."""
    n = crash_node
    r = random.Random(SEED)
    revision = 0
    n.start()
    for cycle in range(3):
        context = f"seed {SEED} cycle {cycle} ({n.kind}, SIGTERM under load)"
        start, load = run_load(n, cycle, r, None, context, graceful=True)
        n.start()
        revision = verify(n, start, load, revision, context)
    n.stop()


def _last_segment(n: Node) -> pathlib.Path:
    segments = sorted((n.data_dir / "member" / "wal").glob("*.wal"))
    assert segments, "no WAL segment"
    return segments[-1]


def _written_bytes(path: pathlib.Path) -> int:
    """The length of a preallocated segment's written part (its tail reads as zeroes)."""
    data = path.read_bytes()
    return len(data.rstrip(b"\0"))


def _put_all(n: Node, prefix: str, count: int) -> list[bytes]:
    """Sequential puts until `count` or the node dies; returns the acknowledged keys."""
    acked = []
    with grpc.insecure_channel(n.endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(count):
            key = f"{prefix}/{i:03d}".encode()
            try:
                kv.Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=RPC_TIMEOUT_S)
            except grpc.RpcError:
                break
            acked.append(key)
    return acked


def _keys(n: Node, prefix: str) -> list[bytes]:
    with grpc.insecure_channel(n.endpoint) as ch:
        req = rpc_pb2.RangeRequest(key=f"{prefix}/".encode(), range_end=f"{prefix}0".encode())
        return [kv.key for kv in rpc_pb2_grpc.KVStub(ch).Range(req, timeout=10).kvs]


def test_torn_wal_tail_is_repaired(tmp_path: pathlib.Path) -> None:
    """petra dies after writing a WAL record it has not fsynced; that record's last bytes are
    torn off. The restart repairs the tail (keeping a .broken copy), loses no acknowledged
    write, and the repaired log takes new writes that survive another restart."""
    n = make_node("petra", tmp_path, extra_args=FAST_ELECTION)
    try:
        n.env = {"PETRA_FAILPOINTS": "wal.after_write:kill@30"}
        n.start()
        acked = _put_all(n, "torn", 100)
        wait_for(lambda: not n.alive(), 10, "the failpoint to kill the node")
        assert 0 < len(acked) < 100
        segment = _last_segment(n)
        end = _written_bytes(segment)
        with open(segment, "r+b") as f:  # tear the unsynced last record
            f.seek(end - 12)
            f.write(b"\0" * 12)
        n.env = {}
        n.start()
        assert _keys(n, "torn")[: len(acked)] == acked
        assert list(segment.parent.glob("*.broken")), "no .broken copy of the repaired segment"
        more = _put_all(n, "after", 5)
        n.kill9()
        n.start()
        assert _keys(n, "after") == more and len(more) == 5
        assert _keys(n, "torn")[: len(acked)] == acked
        n.stop()
    finally:
        n.kill9()


def _digests(paths: list[pathlib.Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_mid_log_wal_corruption_is_refused(tmp_path: pathlib.Path) -> None:
    """A flipped byte a third of the way into the fsynced log (etcd 3.4 takes such damage for a
    torn tail and silently drops the rest of the log): petra refuses to start, names the
    segment and the offset, and changes nothing on disk."""
    n = make_node("petra", tmp_path, extra_args=FAST_ELECTION)
    try:
        n.start()
        assert len(_put_all(n, "c", 60)) == 60
        n.stop()
        segment = _last_segment(n)
        offset = _written_bytes(segment) // 3
        data = bytearray(segment.read_bytes())
        data[offset] ^= 0x40
        segment.write_bytes(bytes(data))
        watched = sorted(p for p in n.data_dir.rglob("*") if p.is_file() and "lock" not in p.name)
        before = _digests(watched)
        with pytest.raises(NodeFailed) as info:
            n.start()
        message = str(info.value)
        assert segment.name in message and "offset" in message, message[-2000:]
        assert n.proc is not None and n.proc.returncode not in (0, -signal.SIGKILL)
        assert _digests(watched) == before, "the refused start changed files on disk"
        assert not list(segment.parent.glob("*.broken"))
    finally:
        n.kill9()


def test_corrupt_newest_snapshot_falls_back(crash_node: Node) -> None:
    """A flipped byte in the newest .snap file: the node renames it .broken, starts from an
    older snapshot plus the WAL, and every acknowledged write is there (as etcd does)."""
    n = crash_node
    n.start()
    acked = _put_all(n, "snap", 120)
    assert len(acked) == 120
    n.stop()
    snap_dir = n.data_dir / "member" / "snap"
    snaps = sorted(snap_dir.glob("*.snap"))
    assert len(snaps) >= 2, f"expected several snapshots with --snapshot-count=25: {snaps}"
    newest = snaps[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    n.start()
    assert _keys(n, "snap") == acked
    assert (snap_dir / (newest.name + ".broken")).exists()
    n.stop()


@pytest.mark.parametrize(
    "failpoint",
    [
        "wal.before_write:kill@1",
        "wal.after_write:kill@1",
    ],
)
def test_crash_during_first_start(failpoint: str, tmp_path: pathlib.Path) -> None:
    """Killed at the first WAL write of a brand-new member (while the data dir is being
    initialised), petra must come up on the next start, elect itself and take writes."""
    n = make_node("petra", tmp_path, extra_args=FAST_ELECTION)
    try:
        assert not try_start(n, failpoint), "the failpoint did not fire during the first start"
        n.env = {}
        n.start(timeout_s=8)  # a new member elects itself well within 1 s with these timers
        assert len(_put_all(n, "first", 3)) == 3
        n.stop()
    finally:
        n.kill9()
