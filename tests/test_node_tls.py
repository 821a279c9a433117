"""Client TLS: the same checks against etcd 3.4.23 (which proves them) and petra.

A node serves its client URL over https with a test CA's certificate (tests/tls_certs.py).
The real etcdctl and Python gRPC clients reach it over TLS; curl-style HTTP/1.1 clients get
/health and the JSON gateway on the same port; a plain-text client gets nothing. With
--client-cert-auth (and --trusted-ca-file) a client without a certificate, or with one from
another CA, is refused, and one signed by the trusted CA is served. A https URL without
--cert-file/--key-file, and unreadable TLS files, stop the node with one line.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import ssl
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests import nodes, tls_certs
from tests.nodes import ETCD_BIN, Node, TLSFiles, etcdctl

node_kind = nodes.node_kind
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return tls_certs.make(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module", params=nodes.KINDS)
def tls_node(
    request: pytest.FixtureRequest, certs: TLSFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("tls")
    with nodes.running(str(request.param), base, tls=certs) as n:
        yield n


@pytest.fixture(scope="module", params=nodes.KINDS)
def mtls_node(
    request: pytest.FixtureRequest, certs: TLSFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("mtls")
    files = TLSFiles(**{**certs.__dict__, "client_cert_auth": True})
    with nodes.running(str(request.param), base, tls=files) as n:
        yield n


def https_get(
    node: Node, path: str, body: bytes | None = None, cert: bool = False
) -> tuple[int, bytes]:
    """One HTTP/1.1 request over TLS (verifying the node against the test CA)."""
    assert node.tls is not None
    context = ssl.create_default_context(cafile=str(node.tls.ca))
    if cert:
        context.load_cert_chain(str(node.tls.client_cert), str(node.tls.client_key))
    conn = http.client.HTTPSConnection(
        "127.0.0.1", node.client_port, context=context, timeout=TIMEOUT_S
    )
    try:
        conn.request("POST" if body is not None else "GET", path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_etcdctl_and_grpc_over_tls(tls_node: Node) -> None:
    """etcdctl put/get/endpoint health over https, and a Python gRPC client (ALPN h2)."""
    assert etcdctl(tls_node, "put", "tls/k", "v").stdout.strip() == "OK"
    assert etcdctl(tls_node, "get", "tls/k", "--print-value-only").stdout.strip() == "v"
    assert (
        "is healthy"
        in etcdctl(tls_node, "endpoint", "health").stderr
        + etcdctl(tls_node, "endpoint", "health").stdout
    )
    with tls_node.channel() as channel:
        reply = rpc_pb2_grpc.KVStub(channel).Range(
            rpc_pb2.RangeRequest(key=b"tls/k"), timeout=TIMEOUT_S
        )
    assert [kv.value for kv in reply.kvs] == [b"v"]


def test_http_endpoints_over_tls(tls_node: Node) -> None:
    """/health and the JSON gateway answer HTTP/1.1 over TLS on the client port."""
    status, body = https_get(tls_node, "/health")
    assert status == 200 and json.loads(body)["health"] == "true"
    status, body = https_get(tls_node, "/v3/kv/range", b'{"key": "dGxzL2s="}')
    assert status == 200 and json.loads(body)["kvs"][0]["value"] == "dg=="


def test_plain_text_client_is_not_served(tls_node: Node) -> None:
    """A gRPC client without TLS fails (UNAVAILABLE) and the node goes on serving TLS."""
    with (
        grpc.insecure_channel(tls_node.endpoint) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"x"), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert etcdctl(tls_node, "get", "tls/k", "--print-value-only").stdout.strip() == "v"


def test_client_certificates_required(mtls_node: Node, certs: TLSFiles) -> None:
    """With --client-cert-auth: no client certificate, or one from another CA, is refused;
    one from the trusted CA is served (gRPC and HTTP)."""
    with mtls_node.channel(client_cert=False) as channel, pytest.raises(grpc.RpcError) as caught:
        rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"x"), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    stranger = etcdctl(
        mtls_node, "get", "x", f"--cert={certs.ca.parent / 'stranger.pem'}",
        f"--key={certs.ca.parent / 'stranger.key'}", "--command-timeout=3s", check=False,
    )  # fmt: skip
    assert stranger.returncode != 0
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        https_get(mtls_node, "/health")
    assert etcdctl(mtls_node, "put", "mtls/k", "v").stdout.strip() == "OK"
    status, _ = https_get(mtls_node, "/health", cert=True)
    assert status == 200


@pytest.mark.parametrize("given", ["cert", "key", "neither"])
def test_https_without_cert_and_key_is_refused(
    node_kind: str, tmp_path: pathlib.Path, given: str
) -> None:
    """A https client URL without --cert-file and --key-file, or with only one of them:
    etcd's one-line error (from its checks of the TLS settings), exit 1."""
    port = nodes.free_port()
    url = f"https://127.0.0.1:{port}"
    peer = f"http://127.0.0.1:{nodes.free_port()}"
    args = [
        "--name", "t", "--data-dir", str(tmp_path / "data"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"t={peer}",
    ]  # fmt: skip
    some = str(tmp_path / "some.pem")
    if given != "neither":
        args += [f"--{given}-file", some]
    command = (
        [ETCD_BIN, *args]
        if node_kind == "etcd"
        else [nodes.sys.executable, "-m", "server.main", *args]
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=nodes.ROOT)
    assert done.returncode != 0
    expected = {
        "cert": f"KeyFile and CertFile must both be present[key: , cert: {some}]",
        "key": f"KeyFile and CertFile must both be present[key: {some}, cert: ]",
        "neither": f"TLS key/cert (--cert-file, --key-file) must be provided for client url "
        f"{url} with HTTPS scheme",
    }[given]
    assert expected in done.stderr


def test_unreadable_tls_files_stop_petra_with_one_line(
    tmp_path: pathlib.Path, certs: TLSFiles
) -> None:
    """petra names the file it cannot use, on one line, and creates no data dir."""
    port = nodes.free_port()
    url = f"https://127.0.0.1:{port}"
    for cert, key, what in (
        (tmp_path / "none.pem", certs.key, "none.pem"),
        (certs.cert, certs.ca, "ca.pem"),  # a certificate where the key should be
    ):
        args = [
            "--name", "t", "--data-dir", str(tmp_path / "data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--cert-file", str(cert), "--key-file", str(key),
        ]  # fmt: skip
        done = subprocess.run(
            [nodes.sys.executable, "-m", "server.main", *args],
            capture_output=True, text=True, timeout=30, cwd=nodes.ROOT,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and what in lines[0] and "--cert-file" in lines[0], lines
        assert not (tmp_path / "data").exists()


def test_a_trusted_ca_alone_requires_client_certificates(certs: TLSFiles) -> None:
    """As in etcd 3.4 (checked by hand against it: etcdctl without --cert is refused), naming
    --trusted-ca-file without --client-cert-auth still requires a client certificate."""
    from server import tls
    from server.config import Config

    base = {"cert_file": str(certs.cert), "key_file": str(certs.key)}
    assert tls.server_context(Config(**base)).verify_mode == ssl.CERT_NONE
    trusted = Config(**base, trusted_ca_file=str(certs.ca))
    assert tls.server_context(trusted).verify_mode == ssl.CERT_REQUIRED
    assert (
        tls.server_context(Config(**base, client_cert_auth=True)).verify_mode == ssl.CERT_REQUIRED
    )
