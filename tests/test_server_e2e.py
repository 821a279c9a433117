"""End to end: `python -m server.main` as a real process on free ports, driven with gRPC stubs.

Checks the KV, Maintenance and Cluster services through the wire (values, headers, etcd's error
codes and texts), a restart on the same data dir, and a clean exit 0 on SIGTERM.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import grpc
import pytest

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Petra:
    def __init__(self, tmp_path: pathlib.Path, *extra: str) -> None:
        self.port, self.peer_port = free_port(), free_port()
        self.data_dir = tmp_path / "data"
        self.log = tmp_path / "petra.log"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.port}"
        return [
            sys.executable, "-m", "server.main", "--name", "n1", "--data-dir", str(self.data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"n1={peer}", *self.extra,
        ]  # fmt: skip

    def start(self) -> Petra:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.args(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            while True:
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, self.log.read_text()
                try:
                    kv.Range(rpc_pb2.RangeRequest(key=b"health"), timeout=1, wait_for_ready=True)
                    return self
                except grpc.RpcError:
                    continue

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def petra(tmp_path: pathlib.Path) -> Any:
    node = Petra(tmp_path).start()
    yield node
    node.stop()


def stubs(node: Petra) -> tuple[Any, Any, Any, grpc.Channel]:
    channel = grpc.insecure_channel(f"127.0.0.1:{node.port}")
    return (
        rpc_pb2_grpc.KVStub(channel),
        rpc_pb2_grpc.MaintenanceStub(channel),
        rpc_pb2_grpc.ClusterStub(channel),
        channel,
    )


def code_and_text(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_kv_over_the_wire(petra: Petra) -> None:
    """Put/Range/Txn/DeleteRange/Compact with etcd's revisions and headers."""
    kv, maintenance, _, channel = stubs(petra)
    with channel:
        r1 = kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"))
        r2 = kv.Put(rpc_pb2.PutRequest(key=b"b", value=b"2", prev_kv=True))
        assert (r1.header.revision, r2.header.revision) == (2, 3)
        status = maintenance.Status(rpc_pb2.StatusRequest())
        assert r1.header.member_id == status.header.member_id == status.leader
        assert status.raftAppliedIndex >= 3 and status.version == "3.4.23"
        got = kv.Range(rpc_pb2.RangeRequest(key=b"a", range_end=b"c"))
        assert [(x.key, x.value) for x in got.kvs] == [(b"a", b"1"), (b"b", b"2")]
        stale = kv.Range(rpc_pb2.RangeRequest(key=b"a", serializable=True))
        assert stale.kvs[0].value == b"1"
        txn = kv.Txn(
            rpc_pb2.TxnRequest(
                compare=[rpc_pb2.Compare(key=b"a", target=rpc_pb2.Compare.VALUE, value=b"1")],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"c", value=b"3"))],
            )
        )
        assert txn.succeeded and txn.header.revision == 4
        read_only = kv.Txn(
            rpc_pb2.TxnRequest(
                success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"c"))]
            )
        )
        assert read_only.responses[0].response_range.kvs[0].value == b"3"
        deleted = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"b"))
        assert deleted.deleted == 1 and deleted.header.revision == 5
        kv.Compact(rpc_pb2.CompactionRequest(revision=4, physical=True))
        code, text = code_and_text(lambda: kv.Range(rpc_pb2.RangeRequest(key=b"a", revision=3)))
        assert code == grpc.StatusCode.OUT_OF_RANGE
        assert text == "etcdserver: mvcc: required revision has been compacted"


def test_bad_input_gets_etcd_errors(petra: Petra) -> None:
    """Empty keys, oversized requests, duplicate txn keys: etcd's codes and exact texts."""
    kv, _, cluster, channel = stubs(petra)
    with channel:
        assert code_and_text(lambda: kv.Put(rpc_pb2.PutRequest(key=b""))) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: key is not provided",
        )
        big = rpc_pb2.PutRequest(key=b"k", value=b"x" * 1_600_000)
        assert code_and_text(lambda: kv.Put(big)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: request is too large",
        )
        dup = rpc_pb2.TxnRequest(
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k"))] * 2
        )
        assert code_and_text(lambda: kv.Txn(dup)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: duplicate key given in txn request",
        )
        future = rpc_pb2.RangeRequest(key=b"k", revision=1000)
        assert code_and_text(lambda: kv.Range(future)) == (
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
        )
        members = cluster.MemberList(rpc_pb2.MemberListRequest()).members
        assert len(members) == 1 and members[0].name == "n1"
        add = rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:1"])
        assert code_and_text(lambda: cluster.MemberAdd(add)) == (
            grpc.StatusCode.UNAVAILABLE,
            "etcdserver: not capable",
        )
        assert kv.Put(rpc_pb2.PutRequest(key=b"still", value=b"serving")).header.revision == 2


def test_restart_and_sigterm(tmp_path: pathlib.Path) -> None:
    """SIGTERM exits 0; the restarted node has the data and the same revision."""
    node = Petra(tmp_path).start()
    kv, _, _, channel = stubs(node)
    with channel:
        for i in range(10):
            kv.Put(rpc_pb2.PutRequest(key=b"k%d" % i, value=b"v"))
    assert node.stop() == 0
    node.start()
    kv, _, _, channel = stubs(node)
    with channel:
        got = kv.Range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l"))
        assert got.count == 10 and got.header.revision == 11
    assert node.stop() == 0


def test_port_in_use_is_one_line_error(tmp_path: pathlib.Path) -> None:
    """A second node on a busy port exits 1 with a one-line message, creating no data dir."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        node = Petra(tmp_path)
        node.port = port
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(node.args(), cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("petra: listen tcp 127.0.0.1:") and "in use" in lines[-1]
    assert not pathlib.Path(node.data_dir).exists(), "a failed start left a data dir behind"


def run_to_exit(node: Petra) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(node.args(), cwd=ROOT, env=env, capture_output=True, timeout=60)


def last_line(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stderr.decode().strip().splitlines()[-1]


def test_unusable_data_dir_is_one_line_error(tmp_path: pathlib.Path) -> None:
    """A data dir that cannot be created (a file is in the way) ends with exit 1, one line."""
    (tmp_path / "file").write_bytes(b"")
    node = Petra(tmp_path)
    node.data_dir = tmp_path / "file" / "data"
    done = run_to_exit(node)
    assert done.returncode == 1
    assert last_line(done).startswith("petra: cannot access data directory")


def test_data_dir_of_another_cluster_or_in_use(tmp_path: pathlib.Path) -> None:
    """A data dir written with another cluster token is refused; so is one a live node holds."""
    node = Petra(tmp_path).start()
    try:
        second = Petra(tmp_path)
        second.data_dir = node.data_dir
        done = run_to_exit(second)
        assert done.returncode == 1 and "locked" in last_line(done), done.stderr
    finally:
        assert node.stop() == 0
    other = Petra(tmp_path, "--initial-cluster-token", "another")
    other.data_dir = node.data_dir
    done = run_to_exit(other)
    assert done.returncode == 1
    assert "belongs to cluster" in last_line(done), done.stderr


def test_maintenance_and_cluster_over_the_wire(petra: Petra) -> None:
    """Snapshot stream (remaining bytes count down, SHA-256 trailer), Hash/HashKV, MoveLeader
    and membership changes with etcd's errors, Alarm activate/deactivate."""
    import hashlib

    kv, maintenance, cluster, channel = stubs(petra)
    with channel:
        kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"))
        chunks = list(maintenance.Snapshot(rpc_pb2.SnapshotRequest()))
        blobs = [c.blob for c in chunks]
        data, trailer = b"".join(blobs[:-1]), blobs[-1]
        assert trailer == hashlib.sha256(data).digest() and len(data) % 512 == 0
        assert chunks[-2].remaining_bytes == 0 and chunks[0].remaining_bytes == len(data) - len(
            blobs[0]
        )
        hash_kv = maintenance.HashKV(rpc_pb2.HashKVRequest(revision=0))
        assert hash_kv.header.revision == 2 and hash_kv.compact_revision == -1
        assert maintenance.Hash(rpc_pb2.HashRequest()).hash != 0
        me = maintenance.Status(rpc_pb2.StatusRequest()).header.member_id
        maintenance.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=me))
        bad = rpc_pb2.MoveLeaderRequest(targetID=me + 1)
        assert code_and_text(lambda: maintenance.MoveLeader(bad)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "etcdserver: bad leader transferee",
        )
        remove = rpc_pb2.MemberRemoveRequest(ID=me)
        assert code_and_text(lambda: cluster.MemberRemove(remove))[1] == (
            "etcdserver: re-configuration failed due to not enough started members"
        )
        promote = rpc_pb2.MemberPromoteRequest(ID=me)
        assert code_and_text(lambda: cluster.MemberPromote(promote)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "etcdserver: can only promote a learner member",
        )
        unknown = rpc_pb2.MemberRemoveRequest(ID=me + 1)
        assert code_and_text(lambda: cluster.MemberRemove(unknown)) == (
            grpc.StatusCode.NOT_FOUND,
            "etcdserver: member not found",
        )
        nospace = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=me, alarm=rpc_pb2.AlarmType.NOSPACE
        )
        maintenance.Alarm(nospace)
        status = maintenance.Status(rpc_pb2.StatusRequest())
        assert status.errors == [f"memberID:{me} alarm:NOSPACE "]
        assert code_and_text(lambda: kv.Put(rpc_pb2.PutRequest(key=b"b", value=b"2"))) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded",
        )
        nospace.action = rpc_pb2.AlarmRequest.DEACTIVATE
        maintenance.Alarm(nospace)
        assert kv.Put(rpc_pb2.PutRequest(key=b"b", value=b"2")).header.revision == 3


@pytest.mark.slow
def test_idle_watch_survives_client_keepalive_pings(petra: Petra) -> None:
    """A client pinging every 5.5 s (Go clients ping every >= 10 s) on an idle watch is not
    cut off with GOAWAY "too_many_pings": the server accepts pings 5 s apart, as etcd does."""
    import queue
    import threading

    options = [
        ("grpc.keepalive_time_ms", 5500),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    channel = grpc.insecure_channel(f"127.0.0.1:{petra.port}", options=options)
    requests: queue.Queue[Any] = queue.Queue()
    requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"idle")))
    stream = rpc_pb2_grpc.WatchStub(channel).Watch(iter(requests.get, None))
    assert next(stream).created
    done = threading.Event()
    done.wait(25)  # idle: only keepalive pings cross the connection meanwhile
    kv = rpc_pb2_grpc.KVStub(channel)
    kv.Put(rpc_pb2.PutRequest(key=b"idle", value=b"v"))
    assert next(stream).events[0].kv.value == b"v"
    requests.put(None)
    channel.close()


def test_sigterm_under_load_keeps_every_acknowledged_write(tmp_path: pathlib.Path) -> None:
    """SIGTERM while 8 clients write: the node exits 0, in-flight calls are answered or
    failed, and after a restart every acknowledged write is there."""
    import threading

    node = Petra(tmp_path).start()
    acked: list[bytes] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(wid: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            for i in range(100_000):
                if stop.is_set():
                    return
                key = b"w%d/%d" % (wid, i)
                try:
                    kv.Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=10)
                except grpc.RpcError:
                    return
                with lock:
                    acked.append(key)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 100 and time.monotonic() < deadline:
        threads[0].join(0.05)
    assert node.stop() == 0
    stop.set()
    for t in threads:
        t.join(30)
    node.start()
    kv, _, _, channel = stubs(node)
    with channel:
        got = kv.Range(rpc_pb2.RangeRequest(key=b"w", range_end=b"x", keys_only=True))
    stored = {x.key for x in got.kvs}
    assert len(acked) >= 100 and set(acked) <= stored
    assert node.stop() == 0
