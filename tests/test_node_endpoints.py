"""The node's operational surface as a process: HTTP endpoints, gRPC health, systemd readiness,
configuration from ETCD_* variables and --config-file, bad flags, clean SIGTERM.

Each test runs against etcd 3.4.23 and petra (`node_kind`) unless it checks something only
petra promises (its one-line error format).
"""

from __future__ import annotations

import json
import pathlib
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import pytest

from api.etcdserverpb import rpc_pb2
from api.grpc_health.v1 import health_pb2, health_pb2_grpc
from tests import nodes
from tests.nodes import ETCD_BIN, ROOT, Node, make_node, stubs

node_kind = nodes.node_kind
node = nodes.node


def http_get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_metrics_url_serves_health_and_metrics(node: Node) -> None:
    """--listen-metrics-urls serves /health (etcd's JSON) and Prometheus /metrics with the WAL
    fsync histogram, which has counted the fsyncs of a few writes."""
    s = stubs(node)
    try:
        for i in range(3):
            s.kv.Put(rpc_pb2.PutRequest(key=b"m", value=str(i).encode()), timeout=10)
    finally:
        s.close()
    status, _, body = http_get(node.metrics_port, "/health")
    assert (status, json.loads(body)) == (200, {"health": "true"})
    status, ctype, text = http_get(node.metrics_port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert "# TYPE etcd_disk_wal_fsync_duration_seconds histogram" in text
    count_line = next(
        line
        for line in text.splitlines()
        if line.startswith("etcd_disk_wal_fsync_duration_seconds_count")
    )
    assert int(count_line.split()[-1]) >= 3
    assert "etcd_server_has_leader 1" in text
    values = {
        line.split()[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line and not line.startswith("#") and "{" not in line
    }
    # etcd's names, which dashboards use: the same values on both kinds.
    assert values["etcd_debugging_mvcc_current_revision"] == 4  # 1 + three puts
    assert values["etcd_server_is_leader"] == 1
    assert values["etcd_debugging_mvcc_watcher_total"] == 0
    assert values["etcd_mvcc_db_total_size_in_bytes"] > 0
    applied = values["etcd_server_proposals_applied_total"]
    assert 0 < applied <= values["etcd_server_proposals_committed_total"]
    if node.kind == "petra":  # petra's own per-method request metrics
        assert 'petra_grpc_requests_total{method="/etcdserverpb.KV/Put"} 3' in text
        assert 'petra_grpc_request_duration_seconds_count{method="/etcdserverpb.KV/Put"} 3' in text
    else:  # etcd's go-grpc-prometheus equivalent
        assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="Put"' in text


def test_http_on_client_port(node: Node) -> None:
    """etcd answers HTTP/1.1 /health, /version and /metrics on the client port too (cmux); load
    balancers and Kubernetes probes use it. gRPC keeps working beside it."""
    status, _, body = http_get(node.client_port, "/health")
    assert (status, json.loads(body)) == (200, {"health": "true"})
    status, _, body = http_get(node.client_port, "/version")
    assert (status, json.loads(body)) == (200, {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"})
    status, _, body = http_get(node.client_port, "/metrics")
    assert status == 200 and "\netcd_server_has_leader 1" in body
    with grpc.insecure_channel(node.endpoint) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_health_service(node: Node) -> None:
    """grpc.health.v1.Health/Check for service "" answers SERVING on the client port."""
    with grpc.insecure_channel(node.endpoint) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_systemd_ready_notification(node_kind: str, tmp_path: pathlib.Path) -> None:
    """Under a Type=notify unit (NOTIFY_SOCKET set), the node sends READY=1 once it serves."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        n = make_node(node_kind, tmp_path, env={"NOTIFY_SOCKET": path})
        try:
            n.start()
            messages = sock.recv(256).decode().split("\n")
        finally:
            n.stop()
    assert "READY=1" in messages


def test_configured_by_environment_only(node_kind: str, tmp_path: pathlib.Path) -> None:
    """A node configured only by ETCD_* variables (the seed article's /etc/etcd.conf way)."""
    n = make_node(node_kind, tmp_path, name="envnode")
    n.client_port, n.peer_port, n.metrics_port = (nodes.free_port() for _ in range(3))
    peer = f"http://127.0.0.1:{n.peer_port}"
    n.env = {
        "ETCD_NAME": "envnode",
        "ETCD_DATA_DIR": str(n.data_dir),
        "ETCD_LISTEN_CLIENT_URLS": n.url,
        "ETCD_ADVERTISE_CLIENT_URLS": n.url,
        "ETCD_LISTEN_PEER_URLS": peer,
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": peer,
        "ETCD_INITIAL_CLUSTER": f"envnode={peer}",
    }
    n.args_override = ()
    try:
        n.start()
        s = stubs(n)
        members = s.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=10).members
        s.close()
        assert [(m.name, list(m.clientURLs)) for m in members] == [("envnode", [n.url])]
        assert (n.data_dir / "member").is_dir()
    finally:
        n.stop()


def test_configured_by_yaml_file(node_kind: str, tmp_path: pathlib.Path) -> None:
    """--config-file: the YAML is the whole configuration; a contradicting flag is ignored."""
    n = make_node(node_kind, tmp_path, name="yamlnode")
    n.client_port, n.peer_port, n.metrics_port = (nodes.free_port() for _ in range(3))
    peer = f"http://127.0.0.1:{n.peer_port}"
    config = tmp_path / "etcd.yml"
    config.write_text(
        "name: yamlnode\n"
        f"data-dir: {n.data_dir}\n"
        f"listen-client-urls: {n.url}\n"
        f"advertise-client-urls: {n.url}\n"
        f"listen-peer-urls: {peer}\n"
        f"initial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: yamlnode={peer}\n"
        "max-txn-ops: 4\n"
    )
    n.args_override = ("--config-file", str(config), "--max-txn-ops", "1000")
    try:
        n.start()
        s = stubs(n)
        ops = [
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=f"y{i}".encode()))
            for i in range(5)
        ]
        with pytest.raises(grpc.RpcError) as info:
            s.kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=10)
        s.close()
        assert info.value.details() == "etcdserver: too many operations in txn request"
    finally:
        n.stop()


def _run_petra(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "server.main", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-such-flag"], "petra: flag provided but not defined: -no-such-flag"),
        (
            ["--snapshot-count=lots"],
            'petra: invalid value "lots" for --snapshot-count: parse error',
        ),
        (
            ["--peer-cert-file=a.pem"],
            'petra: --peer-cert-file "a.pem": this etcd setting is not supported by petra',
        ),
    ],
)
def test_petra_bad_flag_is_one_line_and_exit_1(args: list[str], message: str) -> None:
    """A bad or unsupported flag: exit status 1 and exactly one line on stderr, nothing started."""
    done = _run_petra(*args)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [message]


def test_etcd_also_refuses_unknown_flags() -> None:
    """etcd, for comparison, refuses an unknown flag with a non-zero status."""
    done = subprocess.run([ETCD_BIN, "--no-such-flag"], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "flag provided but not defined: -no-such-flag" in done.stderr


def test_sigterm_stops_cleanly_and_data_survives(node_kind: str, tmp_path: pathlib.Path) -> None:
    """SIGTERM: a clean exit (petra: status 0; etcd re-raises the signal after its clean-up,
    so it dies of SIGTERM); after a restart the data written before is there."""
    n = make_node(node_kind, tmp_path)
    try:
        n.start()
        s = stubs(n)
        s.kv.Put(rpc_pb2.PutRequest(key=b"durable", value=b"yes"), timeout=10)
        s.close()
        clean = 0 if node_kind == "petra" else -signal.SIGTERM
        assert n.stop() == clean
        n.start()
        s = stubs(n)
        got = s.kv.Range(rpc_pb2.RangeRequest(key=b"durable"), timeout=10)
        s.close()
        assert [kv.value for kv in got.kvs] == [b"yes"]
    finally:
        n.stop()


def test_client_port_in_use(
    node_kind: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client port already taken: the node exits at once saying so, and the test helper
    picks other free ports when the clash came from its own port choice."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        n = make_node(node_kind, tmp_path / "preset")
        n.client_port, n.peer_port, n.metrics_port = busy, nodes.free_port(), nodes.free_port()
        with pytest.raises(nodes.NodeFailed) as info:
            n.start()
        assert "address already in use" in str(info.value)
        assert n.proc is not None and n.proc.returncode != 0

        real_free_port = nodes.free_port
        ports = iter([busy, real_free_port(), real_free_port()])
        monkeypatch.setattr(nodes, "free_port", lambda: next(ports, None) or real_free_port())
        retried = make_node(node_kind, tmp_path / "retry")
        try:
            retried.start()
            assert retried.client_port != busy and retried.starts == 2
        finally:
            retried.stop()
