"""Bad input against a real node: etcd's error code and exact text, and the node keeps serving.

Each test runs against etcd 3.4.23 and petra (`node_kind`). After every kind of abuse the node
must still answer a linearizable read (`assert_serving`). The RSS test repeats the whole barrage
and checks the node's resident memory does not keep growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import random
import socket
import time

import grpc
import pytest

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests import nodes
from tests.nodes import Node, etcdctl_popen, rss_bytes, stubs

node_kind = nodes.node_kind
node = nodes.node
shared_node = nodes.shared_node

MAX_REQUEST_BYTES = 1_572_864  # etcd's default --max-request-bytes
GRPC_LIMIT_BYTES = MAX_REQUEST_BYTES + 512 * 1024


def assert_serving(n: Node) -> None:
    """A linearizable write and read succeed: the node survived."""
    s = stubs(n)
    try:
        s.kv.Put(rpc_pb2.PutRequest(key=b"alive", value=b"yes"), timeout=10)
        got = s.kv.Range(rpc_pb2.RangeRequest(key=b"alive"), timeout=10)
        assert got.kvs[0].value == b"yes"
    finally:
        s.close()
    assert n.alive()


def rpc_error(fn, *args: object) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, timeout=10)
    return info.value.code(), info.value.details()


def put(key: bytes, value: bytes = b"v", **kw: object) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=value, **kw)  # type: ignore[arg-type]


def op_put(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=put(key))


INVALID = grpc.StatusCode.INVALID_ARGUMENT


def bad_requests(n: Node) -> None:
    """The unary bad requests, each answered with etcd's code and exact text."""
    s = stubs(n, options=[("grpc.max_send_message_length", 64 << 20)])
    kv = s.kv
    try:
        too_large = (INVALID, "etcdserver: request is too large")
        assert rpc_error(kv.Put, put(b"big", b"x" * (MAX_REQUEST_BYTES + 1))) == too_large
        code, _ = rpc_error(kv.Put, put(b"huge", b"x" * (GRPC_LIMIT_BYTES + 1)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        no_key = (INVALID, "etcdserver: key is not provided")
        assert rpc_error(kv.Put, put(b"")) == no_key
        assert rpc_error(kv.Range, rpc_pb2.RangeRequest(key=b"")) == no_key
        assert rpc_error(kv.DeleteRange, rpc_pb2.DeleteRangeRequest(key=b"")) == no_key
        lease = (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
        assert rpc_error(kv.Put, put(b"k", lease=0x7777)) == lease
        txn = rpc_pb2.TxnRequest(success=[op_put(f"k{i}".encode()) for i in range(129)])
        assert rpc_error(kv.Txn, txn) == (INVALID, "etcdserver: too many operations in txn request")
        dup = rpc_pb2.TxnRequest(success=[op_put(b"d"), op_put(b"d")])
        assert rpc_error(kv.Txn, dup) == (INVALID, "etcdserver: duplicate key given in txn request")
        nested = rpc_pb2.TxnRequest(
            success=[
                op_put(b"n"),
                rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[op_put(b"n")])),
            ]
        )
        assert rpc_error(kv.Txn, nested) == (
            INVALID,
            "etcdserver: duplicate key given in txn request",
        )
        future = rpc_pb2.RangeRequest(key=b"k", revision=1 << 40)
        assert rpc_error(kv.Range, future) == (
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
        )
        # An inverted range is not an error: it is empty.
        inverted = kv.Range(rpc_pb2.RangeRequest(key=b"z", range_end=b"a"), timeout=10)
        assert (list(inverted.kvs), inverted.count) == ([], 0)
        no_value = put(b"absent", b"", ignore_value=True)
        assert rpc_error(kv.Put, no_value) == (INVALID, "etcdserver: key not found")
        revoke = rpc_pb2.LeaseRevokeRequest(ID=0x7777)
        assert rpc_error(s.lease.LeaseRevoke, revoke) == lease
    finally:
        s.close()


def test_bad_requests_get_etcds_errors(shared_node: Node) -> None:
    """Oversized, empty-key, unknown-lease, too-many-ops, duplicate-key, future-revision."""
    bad_requests(shared_node)
    assert_serving(shared_node)


def test_watch_bad_ranges_and_duplicate_ids(shared_node: Node) -> None:
    """Inverted watch range and duplicate watch ID are refused with etcd's reasons; an empty key
    watches the whole keyspace; cancelling an unknown ID is ignored; the stream stays usable."""
    s = stubs(shared_node)

    def create(key: bytes, watch_id: int, end: bytes = b"") -> rpc_pb2.WatchRequest:
        req = rpc_pb2.WatchCreateRequest(key=key, range_end=end, watch_id=watch_id)
        return rpc_pb2.WatchRequest(create_request=req)

    requests = [
        create(b"b", 5, b"a"),
        create(b"w", 7),
        create(b"w", 7),
        create(b"", 9),
        rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=77)),
        rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()),
    ]
    try:
        replies = s.watch.Watch(iter(requests), timeout=10)
        got = [next(replies) for _ in range(5)]
        replies.cancel()
    finally:
        s.close()
    summary = [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in got]
    assert summary == [
        (-1, True, True, "mvcc: watcher range is empty"),
        (7, True, False, ""),
        (-1, True, True, "mvcc: duplicate watch ID provided on the WatchStream"),
        (9, True, False, ""),
        (-1, False, False, ""),  # the progress reply; nothing for the unknown cancel
    ]
    assert got[4].header.revision > 0
    assert_serving(shared_node)


def garbage_connections(n: Node, seed: int) -> None:
    """Random bytes, an HTTP/1 request, a bad HTTP/2 preface, and silent half-open sockets."""
    r = random.Random(seed)
    payloads = [bytes(r.getrandbits(8) for _ in range(r.randint(1, 4096))) for _ in range(10)]
    payloads += [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x00" * 100_000,
    ]
    idle = []
    for payload in payloads:
        sock = socket.create_connection(("127.0.0.1", n.client_port), timeout=5)
        with contextlib.suppress(OSError):  # the server may close first: a fine answer
            sock.sendall(payload)
        if r.random() < 0.3:
            idle.append(sock)  # leave it open and silent for a while
        else:
            sock.close()
    for sock in idle:
        sock.close()


def test_random_bytes_on_client_port(shared_node: Node) -> None:
    """Garbage on the client port is dropped; the node keeps serving gRPC."""
    seed = 1234
    garbage_connections(shared_node, seed)
    assert_serving(shared_node)


def vanishing_gateway_watches(n: Node, count: int) -> None:
    """JSON-gateway watches (chunked HTTP/1.1 on the client port) whose clients close the
    connection once the watch is created."""
    body = b'{"create_request": {"key": "dg=="}}'
    request = b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    socks = [
        socket.create_connection(("127.0.0.1", n.client_port), timeout=10) for _ in range(count)
    ]
    try:
        for sock in socks:
            sock.sendall(request + body)
        for sock in socks:
            seen = b""
            while b'"created":true' not in seen:
                data = sock.recv(4096)
                assert data, f"closed before the watch was created: {seen[:200]!r}"
                seen += data
    finally:
        for sock in socks:
            sock.close()


def vanishing_clients(n: Node) -> None:
    """Watch and keep-alive streams whose clients disappear mid-stream, over gRPC and over the
    JSON gateway."""
    vanishing_gateway_watches(n, 20)
    for _ in range(3):
        s = stubs(n)
        w = s.watch.Watch(
            iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"v"))]),
            timeout=30,
        )
        assert next(w).created
        grant = s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10)
        ka = s.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=grant.ID)]), timeout=30)
        assert next(ka).ID == grant.ID
        s.channel.close()  # no cancel, no half-close: the client is just gone
    # A client process killed while it watches (from the next revision: no race with the put).
    s = stubs(n)
    try:
        now = s.kv.Range(rpc_pb2.RangeRequest(key=b"v"), timeout=10).header.revision
        reader = nodes.LineReader(etcdctl_popen(n, "watch", "--prefix", "v", f"--rev={now + 1}"))
        try:
            s.kv.Put(rpc_pb2.PutRequest(key=b"v1", value=b"x"), timeout=10)
            assert reader.until(3) == ["PUT", "v1", "x"]
        finally:
            reader.close()  # SIGKILL
    finally:
        s.close()


def test_clients_that_vanish_mid_stream(shared_node: Node) -> None:
    """Streams whose clients close or die do not hurt the node."""
    vanishing_clients(shared_node)
    assert_serving(shared_node)


async def many_watchers(n: Node, streams: int, channels: int = 10) -> None:
    """`streams` watch streams on one key; one put reaches every one of them."""
    chans = [grpc.aio.insecure_channel(n.endpoint) for _ in range(channels)]
    calls = []
    try:
        for i in range(streams):
            stub = rpc_pb2_grpc.WatchStub(chans[i % channels])
            create = rpc_pb2.WatchCreateRequest(key=b"many")
            call = stub.Watch(timeout=60)
            await call.write(rpc_pb2.WatchRequest(create_request=create))
            calls.append(call)
        created = await asyncio.gather(*(c.read() for c in calls))
        assert all(r.created for r in created)
        kv = rpc_pb2_grpc.KVStub(chans[0])
        await kv.Put(rpc_pb2.PutRequest(key=b"many", value=b"!"), timeout=10)
        events = await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), 60)
        assert all(r.events[0].kv.value == b"!" for r in events)
        for call in calls:
            call.cancel()
    finally:
        for ch in chans:
            await ch.close()


def test_hundred_concurrent_watch_streams(shared_node: Node) -> None:
    """100 concurrent watch streams each get the event of one put."""
    asyncio.run(many_watchers(shared_node, 100))
    assert_serving(shared_node)


@pytest.mark.slow
def test_thousand_concurrent_watch_streams(node: Node) -> None:
    """1,000 concurrent watch streams each get the event of one put (slow)."""
    asyncio.run(many_watchers(node, 1000, channels=20))
    assert_serving(node)


def test_rss_stays_flat_under_repeated_abuse(node: Node) -> None:
    """The whole barrage, repeated: the node's RSS after round 5 is within 25 MiB of round 1."""
    assert node.proc is not None
    pid = node.proc.pid
    samples = []
    for round_ in range(5):
        bad_requests(node)
        garbage_connections(node, seed=round_)
        asyncio.run(many_watchers(node, 30, channels=3))
        vanishing_gateway_watches(node, 30)
        assert_serving(node)
        samples.append(rss_bytes(pid))
    growth = samples[-1] - samples[0]
    assert growth < 25 << 20, f"RSS grew {growth >> 20} MiB: {[s >> 20 for s in samples]} MiB"


def test_slow_watcher_loses_nothing(shared_node: Node) -> None:
    """A watcher that stops reading while 3,000 events (10 KiB values) pile up gets every one
    of them afterwards, in order, each once (etcd#17529 lost events under starvation). The
    client accepts any message size, as Go's clientv3 does: catch-up responses bundle many
    revisions (etcd sent one of 169 MB here with bigger values)."""
    s = stubs(shared_node, options=[("grpc.max_receive_message_length", -1)])
    requests: list[rpc_pb2.WatchRequest] = []
    try:
        start = s.kv.Range(rpc_pb2.RangeRequest(key=b"slow"), timeout=10).header.revision + 1
        create = rpc_pb2.WatchCreateRequest(key=b"slow/", range_end=b"slow0", start_revision=start)
        requests.append(rpc_pb2.WatchRequest(create_request=create))
        stream = s.watch.Watch(iter(requests), timeout=120)
        assert next(stream).created
        big = b"x" * (10 << 10)
        for t in range(300):  # not reading meanwhile: the server must buffer or pause, not drop
            ops = [
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=f"slow/{t}/{i}".encode(), value=big)
                )
                for i in range(10)
            ]
            s.kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=30)
        seen: list[tuple[int, bytes]] = []
        while len(seen) < 3000:
            seen += [(e.kv.mod_revision, e.kv.key) for e in next(stream).events]
        stream.cancel()
    finally:
        s.close()
    want = [(start + t, f"slow/{t}/{i}".encode()) for t in range(300) for i in range(10)]
    assert seen == want
    assert_serving(shared_node)


def test_quota_exhaustion_and_recovery(node_kind: str, tmp_path: pathlib.Path) -> None:
    """With a 4 MiB quota, big puts end in etcd's "database space exceeded" and the NOSPACE
    alarm; reads and deletes still work, writes do not; compact + defrag + disarm recovers."""
    n = nodes.make_node(node_kind, tmp_path, extra_args=("--quota-backend-bytes=4194304",))
    n.start()
    s = stubs(n)
    try:
        big = b"x" * (256 << 10)
        code = detail = None
        # Not a fixed count: etcd sees its backend grow only when its batch commits (every
        # 100 ms), so fast puts can run well past the quota before the first refusal.
        deadline = time.monotonic() + 60
        i = 0
        while code is None and time.monotonic() < deadline:
            try:
                s.kv.Put(put(f"q/{i}".encode(), big), timeout=10)
            except grpc.RpcError as e:
                code, detail = e.code(), e.details()
            i += 1
        assert (code, detail) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded",
        )
        alarms = s.maintenance.Alarm(rpc_pb2.AlarmRequest(), timeout=10).alarms
        assert [a.alarm for a in alarms] == [rpc_pb2.AlarmType.NOSPACE]
        assert rpc_error(s.kv.Put, put(b"small")) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded",
        )
        s.kv.Range(rpc_pb2.RangeRequest(key=b"q/0"), timeout=10)
        gone = s.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"q/", range_end=b"q0"), timeout=10)
        assert gone.deleted > 0
        s.kv.Compact(
            rpc_pb2.CompactionRequest(revision=gone.header.revision, physical=True), timeout=30
        )
        s.maintenance.Defragment(rpc_pb2.DefragmentRequest(), timeout=60)
        disarm = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.DEACTIVATE,
            memberID=alarms[0].memberID,
            alarm=rpc_pb2.AlarmType.NOSPACE,
        )
        s.maintenance.Alarm(disarm, timeout=10)
        assert list(s.maintenance.Alarm(rpc_pb2.AlarmRequest(), timeout=10).alarms) == []
        s.kv.Put(put(b"after", b"ok"), timeout=10)
    finally:
        s.close()
        n.stop()
