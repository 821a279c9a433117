"""The services end to end on a real node process, through the gRPC stubs, run unchanged
against etcd 3.4.23 (which proves each test) and petra: watch replay and live events,
compacted cancel, progress, lease expiry and keepalive, lock contention, elections."""

from __future__ import annotations

import os
import pathlib
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from api.etcdserverpb import rpc_pb2
from api.v3electionpb import v3election_pb2
from api.v3lockpb import v3lock_pb2
from tests import nodes
from tests.nodes import Node, Stubs, stubs, wait_for

# Every test runs against petra, and against etcd 3.4.23 to prove the test itself; the etcd
# runs are marked slow to keep the default suite short (`pytest -m ''` runs them).
KINDS = [pytest.param("etcd", marks=pytest.mark.slow), "petra"]


@pytest.fixture(params=KINDS)
def node_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


node = nodes.node  # a fresh node of node_kind


@pytest.fixture(scope="module", params=KINDS)
def shared_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """One node per kind for this module; tests keep to their own key prefixes."""
    with nodes.running(str(request.param), tmp_path_factory.mktemp("shared")) as n:
        yield n


CALL_TIMEOUT_S = 20.0


class WatchCall:
    """A Watch stream driven from the test: `send` requests, `next` responses (deadline)."""

    def __init__(self, s: Stubs) -> None:
        self._requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        self._call = s.watch.Watch(iter(self._requests.get, None), timeout=60)
        self._responses: queue.Queue[object] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for response in self._call:
                self._responses.put(response)
        except grpc.RpcError as exc:
            self._responses.put(exc)

    def send(self, request: rpc_pb2.WatchRequest) -> None:
        self._requests.put(request)

    def create(self, key: bytes, **fields: object) -> rpc_pb2.WatchResponse:
        create = rpc_pb2.WatchCreateRequest(key=key, **fields)  # type: ignore[arg-type]
        self.send(rpc_pb2.WatchRequest(create_request=create))
        return self.next()

    def next(self, timeout_s: float = CALL_TIMEOUT_S) -> rpc_pb2.WatchResponse:
        item = self._responses.get(timeout=timeout_s)
        assert isinstance(item, rpc_pb2.WatchResponse), item
        return item

    def events(self, count: int) -> list[tuple[int, bytes, bytes, int]]:
        out: list[tuple[int, bytes, bytes, int]] = []
        while len(out) < count:
            response = self.next()
            out.extend((e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in response.events)
        return out

    def close(self) -> None:
        self._call.cancel()
        self._requests.put(None)


@pytest.fixture
def s(shared_node: Node) -> Iterator[Stubs]:
    st = stubs(shared_node)
    yield st
    st.close()


def put(s: Stubs, key: bytes, value: bytes = b"v", lease: int = 0) -> int:
    return s.kv.Put(rpc_pb2.PutRequest(key=key, value=value, lease=lease)).header.revision


def grant(s: Stubs, ttl_s: int) -> int:
    return s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl_s)).ID


def count(s: Stubs, prefix: bytes) -> int:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    return s.kv.Range(rpc_pb2.RangeRequest(key=prefix, range_end=end, count_only=True)).count


PUT, DELETE = 0, 1


def test_watch_replays_history_then_goes_live(s: Stubs) -> None:
    first = put(s, b"wr/a", b"1")
    put(s, b"wr/b", b"2")
    put(s, b"other", b"x")
    call = WatchCall(s)
    try:
        created = call.create(b"wr/", range_end=b"wr0", start_revision=first)
        assert created.created and created.watch_id == 0
        assert call.events(2) == [(PUT, b"wr/a", b"1", first), (PUT, b"wr/b", b"2", first + 1)]
        live = put(s, b"wr/c", b"3")
        deleted = s.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"wr/a")).header.revision
        assert call.events(2) == [(PUT, b"wr/c", b"3", live), (DELETE, b"wr/a", b"", deleted)]
    finally:
        call.close()


def test_watch_ids_ranges_cancel_and_progress(s: Stubs) -> None:
    call = WatchCall(s)
    try:
        assert call.create(b"wi/a").watch_id == 0
        assert call.create(b"wi/b", watch_id=5).watch_id == 5
        duplicate = call.create(b"wi/c", watch_id=5)
        assert (duplicate.watch_id, duplicate.created, duplicate.canceled) == (-1, True, True)
        assert duplicate.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
        empty = call.create(b"wi/z", range_end=b"wi/a")
        assert (empty.watch_id, empty.canceled) == (-1, True)
        assert empty.cancel_reason == "mvcc: watcher range is empty"
        assert call.create(b"wi/d").watch_id == 1
        call.send(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=5)))
        canceled = call.next()
        assert (canceled.watch_id, canceled.canceled) == (5, True)
        revision = put(s, b"wi/a")
        assert call.events(1) == [(PUT, b"wi/a", b"v", revision)]
        call.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        progress = call.next()
        assert progress.watch_id == -1 and not progress.events
        assert progress.header.revision >= revision
    finally:
        call.close()


def test_negative_start_revision_is_cancelled_as_compacted(s: Stubs) -> None:
    call = WatchCall(s)
    try:
        created = call.create(b"neg/k", start_revision=-3)
        assert created.created and not created.canceled
        canceled = call.next()
        assert (canceled.watch_id, canceled.canceled) == (created.watch_id, True)
        assert canceled.compact_revision == -1  # this shared node is never compacted
    finally:
        call.close()


def test_watch_prev_kv_and_filters(s: Stubs) -> None:
    put(s, b"wf/k", b"old")
    call = WatchCall(s)
    try:
        call.create(b"wf/k", prev_kv=True, filters=[rpc_pb2.WatchCreateRequest.NOPUT])
        put(s, b"wf/k", b"new")
        revision = s.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"wf/k")).header.revision
        response = call.next()
        assert [(e.type, e.kv.mod_revision) for e in response.events] == [(DELETE, revision)]
        assert response.events[0].prev_kv.value == b"new"
    finally:
        call.close()


def test_large_revision_is_fragmented_for_watchers_that_ask(s: Stubs) -> None:
    """A delete of three 900 KiB keys seen with prev_kv is over max-request-bytes + 512 KiB:
    split into fragments (all but the last flagged) for a fragment watcher, whole otherwise."""
    big = b"x" * (900 << 10)
    for key in (b"fr/a", b"fr/b", b"fr/c"):
        put(s, key, big)
    fragmented, whole = WatchCall(s), WatchCall(s)
    try:
        fragmented.create(b"fr/", range_end=b"fr0", prev_kv=True, fragment=True)
        whole.create(b"fr/", range_end=b"fr0", prev_kv=True)
        s.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"fr/", range_end=b"fr0"))
        parts = [fragmented.next()]
        while parts[-1].fragment:
            parts.append(fragmented.next())
        assert len(parts) >= 2
        assert [e.kv.key for p in parts for e in p.events] == [b"fr/a", b"fr/b", b"fr/c"]
        assert all(e.prev_kv.value == big for p in parts for e in p.events)
        single = whole.next()
        assert len(single.events) == 3 and not single.fragment
    finally:
        fragmented.close()
        whole.close()


def test_compacted_watch_is_canceled_with_the_compact_revision(node: Node) -> None:
    st = stubs(node)
    call = WatchCall(st)
    try:
        first = put(st, b"c/k", b"0")
        for i in range(1, 5):
            put(st, b"c/k", str(i).encode())
        st.kv.Compact(rpc_pb2.CompactionRequest(revision=first + 3, physical=True))
        created = call.create(b"c/k", start_revision=first)
        assert created.created
        canceled = call.next()
        assert canceled.canceled and canceled.compact_revision == first + 3
        assert call.create(b"c/k", start_revision=first + 3).created  # at it: allowed
        assert [e[2] for e in call.events(2)] == [b"3", b"4"]
    finally:
        call.close()
        st.close()


def test_lease_expiry_deletes_its_keys_at_one_revision(s: Stubs) -> None:
    lease = grant(s, 2)
    put(s, b"le/a", lease=lease)
    put(s, b"le/b", lease=lease)
    call = WatchCall(s)
    try:
        call.create(b"le/", range_end=b"le0")
        expired = call.events(2)
        assert [(e[0], e[1]) for e in expired] == [(DELETE, b"le/a"), (DELETE, b"le/b")]
        assert expired[0][3] == expired[1][3]
        ttl = s.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease))
        assert ttl.TTL == -1
    finally:
        call.close()


def test_keepalive_keeps_a_lease_past_its_ttl(s: Stubs) -> None:
    lease = grant(s, 2)
    put(s, b"ka/k", lease=lease)
    requests: queue.Queue[rpc_pb2.LeaseKeepAliveRequest | None] = queue.Queue()
    responses = s.lease.LeaseKeepAlive(iter(requests.get, None), timeout=60)
    try:
        held_until = time.monotonic() + 3.5  # well past the TTL (expiry alone takes <= 3 s)
        while time.monotonic() < held_until:
            requests.put(rpc_pb2.LeaseKeepAliveRequest(ID=lease))
            renewed = next(responses)
            assert (renewed.ID, renewed.TTL) == (lease, 2)  # noqa: SIM300 (ID is no constant)
            wait_for(
                lambda: s.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease)).TTL < 2,
                what="the lease's remaining TTL to drop",
            )
        assert count(s, b"ka/") == 1
        requests.put(rpc_pb2.LeaseKeepAliveRequest(ID=123456789))
        assert next(responses).TTL == 0  # unknown lease: TTL 0, not an error
    finally:
        requests.put(None)
        responses.cancel()
    s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease))


def test_lease_errors(s: Stubs) -> None:
    with pytest.raises(grpc.RpcError) as error:
        s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=987654321))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == "etcdserver: requested lease not found"
    with pytest.raises(grpc.RpcError) as error:
        s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=9_000_000_001))
    assert error.value.details() == "etcdserver: too large lease TTL"
    lease = s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=4242, TTL=1))
    assert (lease.ID, lease.TTL) == (4242, 2)  # raised to the minimum TTL
    with pytest.raises(grpc.RpcError) as error:
        s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=4242, TTL=60))
    assert error.value.details() == "etcdserver: lease already exists"
    assert 4242 in [
        status.ID for status in s.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest()).leases
    ]
    s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=4242))


def test_lock_contention_and_handover_on_unlock_and_on_expiry(s: Stubs) -> None:
    holder, second, third = grant(s, 2), grant(s, 30), grant(s, 30)
    first = s.lock.Lock(v3lock_pb2.LockRequest(name=b"lk", lease=holder), timeout=CALL_TIMEOUT_S)
    assert first.key == b"lk/" + format(holder, "x").encode()
    waiting = s.lock.Lock.future(
        v3lock_pb2.LockRequest(name=b"lk", lease=second), timeout=CALL_TIMEOUT_S
    )
    wait_for(lambda: count(s, b"lk/") == 2, what="the second waiter's key")
    assert not waiting.done()
    # The holder never unlocks: its lease expires and the lock passes on.
    acquired = waiting.result(timeout=CALL_TIMEOUT_S)
    assert acquired.key == b"lk/" + format(second, "x").encode()
    waiting = s.lock.Lock.future(
        v3lock_pb2.LockRequest(name=b"lk", lease=third), timeout=CALL_TIMEOUT_S
    )
    wait_for(lambda: count(s, b"lk/") == 2, what="the third waiter's key")
    assert not waiting.done()
    s.lock.Unlock(v3lock_pb2.UnlockRequest(key=acquired.key))
    last = waiting.result(timeout=CALL_TIMEOUT_S)
    assert first.header.revision < acquired.header.revision < last.header.revision
    # The fencing token, the key's create revision, grows with each holder.
    token = s.kv.Range(rpc_pb2.RangeRequest(key=last.key)).kvs[0].create_revision
    assert first.header.revision < token < last.header.revision
    s.lock.Unlock(v3lock_pb2.UnlockRequest(key=last.key))


def test_election_campaign_observe_proclaim_resign(s: Stubs) -> None:
    with pytest.raises(grpc.RpcError) as error:
        s.election.Leader(v3election_pb2.LeaderRequest(name=b"el"))
    assert error.value.code() == grpc.StatusCode.UNKNOWN
    assert error.value.details() == "election: no leader"
    observed = s.election.Observe(v3election_pb2.LeaderRequest(name=b"el"), timeout=60)
    a, b = grant(s, 30), grant(s, 30)
    won = s.election.Campaign(v3election_pb2.CampaignRequest(name=b"el", lease=a, value=b"A"))
    assert won.leader.key == b"el/" + format(a, "x").encode()
    assert (won.leader.name, won.leader.lease, won.leader.rev) == (b"el", a, won.header.revision)
    assert next(observed).kv.value == b"A"
    challenger = s.election.Campaign.future(
        v3election_pb2.CampaignRequest(name=b"el", lease=b, value=b"B"), timeout=CALL_TIMEOUT_S
    )
    s.election.Proclaim(v3election_pb2.ProclaimRequest(leader=won.leader, value=b"A2"))
    assert next(observed).kv.value == b"A2"
    assert s.election.Leader(v3election_pb2.LeaderRequest(name=b"el")).kv.value == b"A2"
    wait_for(lambda: count(s, b"el/") == 2, what="the challenger's key")
    assert not challenger.done()
    s.election.Resign(v3election_pb2.ResignRequest(leader=won.leader))
    elected = challenger.result(timeout=CALL_TIMEOUT_S)
    assert elected.leader.lease == b
    assert next(observed).kv.value == b"B"
    with pytest.raises(grpc.RpcError) as error:
        s.election.Proclaim(v3election_pb2.ProclaimRequest(leader=won.leader, value=b"x"))
    assert error.value.details() == "election: not leader"
    with pytest.raises(grpc.RpcError) as error:
        s.election.Resign(v3election_pb2.ResignRequest())
    assert error.value.details() == '"leader" field must be provided'
    observed.cancel()
    s.election.Resign(v3election_pb2.ResignRequest(leader=elected.leader))


# A client that opens many watch streams, says "ready" once every watcher is created, then
# waits to be killed: its streams vanish without a cancel, as a crashed client's do.
STREAMS_CLIENT = r"""
import asyncio, sys
import grpc
from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

async def main(endpoint, streams):
    channel = grpc.aio.insecure_channel(endpoint)
    stub = rpc_pb2_grpc.WatchStub(channel)
    calls = []
    for i in range(streams):
        call = stub.Watch()
        create = rpc_pb2.WatchCreateRequest(key=b"leak/%d" % i)
        await call.write(rpc_pb2.WatchRequest(create_request=create))
        calls.append(call)
    for call in calls:
        assert (await call.read()).created
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def gauge(n: Node, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{n.metrics_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def vanishing_streams(n: Node, streams: int) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", STREAMS_CLIENT, n.endpoint, str(streams)],
        cwd=nodes.ROOT, env={**os.environ, "PYTHONPATH": str(nodes.ROOT)},
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        assert gauge(n, WATCHERS) == streams
    finally:
        client.kill()
        client.wait()
    wait_for(lambda: gauge(n, WATCHERS) == 0, timeout_s=30, what="the watchers to go")


WATCHERS = "etcd_debugging_mvcc_watcher_total"


def test_clients_that_vanish_leave_no_watchers_and_no_memory(node: Node) -> None:
    """1,000 concurrent streams whose client is killed, three times: every watcher goes, and
    the server's memory after the third round is within 10 MiB of the first."""
    assert node.proc is not None
    rss_bytes = []
    for _ in range(3):
        vanishing_streams(node, 1000)
        rss_bytes.append(nodes.rss_bytes(node.proc.pid))
    assert rss_bytes[2] - rss_bytes[0] < 10 << 20, rss_bytes


def compacted(st: Stubs, revision: int) -> bool:
    try:
        st.kv.Range(rpc_pb2.RangeRequest(key=b"ac/k", revision=revision))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.OUT_OF_RANGE, exc
        assert exc.details() == "etcdserver: mvcc: required revision has been compacted"
        return True
    return False


def test_periodic_auto_compaction(node_kind: str, tmp_path: pathlib.Path) -> None:
    """--auto-compaction-retention=1s: history older than about a second gets compacted,
    through Raft like a client Compact, with no client asking."""
    args = ("--auto-compaction-mode=periodic", "--auto-compaction-retention=1s")
    with nodes.running(node_kind, tmp_path, extra_args=args) as n:
        st = stubs(n)
        try:
            first = put(st, b"ac/k", b"0")
            for i in range(1, 5):
                put(st, b"ac/k", str(i).encode())
            wait_for(lambda: compacted(st, first), timeout_s=20, what="an auto-compaction")
            assert st.kv.Range(rpc_pb2.RangeRequest(key=b"ac/k")).kvs[0].value == b"4"
        finally:
            st.close()


def test_leases_and_history_survive_a_restart(node: Node) -> None:
    """After a restart the lessor restores leases from the store (full TTL again, keys still
    attached, and they still expire), and a watch resumes from an old revision."""
    st = stubs(node)
    try:
        lease = grant(st, 30)
        short = grant(st, 2)
        first = put(st, b"rs/a", b"1", lease=lease)
        put(st, b"rs/b", b"2", lease=short)
    finally:
        st.close()
    node.restart()
    st = stubs(node)
    call = WatchCall(st)
    try:
        ttl = st.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease, keys=True))
        assert ttl.grantedTTL == 30 and 25 <= ttl.TTL <= 31 and list(ttl.keys) == [b"rs/a"]
        call.create(b"rs/", range_end=b"rs0", start_revision=first)
        replayed = call.events(2)
        assert [(e[1], e[2]) for e in replayed] == [(b"rs/a", b"1"), (b"rs/b", b"2")]
        (expired,) = call.events(1)  # the short lease still expires after the restart
        assert (expired[0], expired[1]) == (DELETE, b"rs/b")
    finally:
        call.close()
        st.close()


@pytest.mark.slow
def test_a_stalled_reader_does_not_stall_others(node: Node) -> None:
    """One stream whose client never reads a response, one that reads: over 400 puts of
    64 KiB (far beyond the HTTP/2 windows of the stalled stream), the reader sees every
    event in order and no put waits for the stalled client."""
    st = stubs(node)
    requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
    create = rpc_pb2.WatchCreateRequest(key=b"st/k")
    requests.put(rpc_pb2.WatchRequest(create_request=create))
    stalled = st.watch.Watch(iter(requests.get, None), timeout=120)  # never iterated
    reader = WatchCall(st)
    try:
        reader.create(b"st/k")
        revisions = [put(st, b"st/k", b"%06d" % i + b"x" * (64 << 10)) for i in range(400)]
        assert [e[3] for e in reader.events(400)] == revisions
    finally:
        reader.close()
        stalled.cancel()
        requests.put(None)
        st.close()
