"""server.metrics, server.http_endpoints, server.notify and server.health_service, in-process."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import socket
from collections.abc import Awaitable, Callable

import grpc
import pytest

from api.grpc_health.v1 import health_pb2, health_pb2_grpc
from server import health_service, http_endpoints, metrics, notify

# --- metrics -------------------------------------------------------------------------------


def test_counter_and_histogram_render_prometheus_text() -> None:
    """Counts, cumulative buckets (le inclusive), sum and count come out in the text format."""
    c = metrics.Counter("t_requests_total", "Requests.", "method")
    c.inc("Range")
    c.inc("Range")
    c.inc("Put")
    h = metrics.Histogram("t_seconds", "Latency.", (0.1, 1.0), "method")
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe("Put", v)
    text = "\n".join(c.render() + h.render())
    assert "# TYPE t_requests_total counter" in text
    assert 't_requests_total{method="Range"} 2' in text
    assert 't_requests_total{method="Put"} 1' in text
    assert "# TYPE t_seconds histogram" in text
    assert 't_seconds_bucket{method="Put",le="0.1"} 2' in text
    assert 't_seconds_bucket{method="Put",le="1"} 3' in text
    assert 't_seconds_bucket{method="Put",le="+Inf"} 4' in text
    assert 't_seconds_sum{method="Put"} 3.65' in text
    assert 't_seconds_count{method="Put"} 4' in text


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in label values are escaped as the format requires."""
    c = metrics.Counter("t_total", "x", "method")
    c.inc('a"b\\c\nd')
    assert 't_total{method="a\\"b\\\\c\\nd"} 1' in c.render()


def test_module_metrics_and_gauges_render() -> None:
    """The shared metrics, a registered gauge and a failing gauge all render; RSS is measured."""
    metrics.REQUESTS.inc("/etcdserverpb.KV/Range")
    metrics.REQUEST_SECONDS.observe("/etcdserverpb.KV/Range", 0.002)
    metrics.WAL_FSYNC_SECONDS.observe(None, 0.0015)
    metrics.gauge("t_raft_term", "Raft term.", lambda: 7)
    metrics.gauge("t_broken", "Raises.", lambda: 1 / 0)
    try:
        text = metrics.render()
    finally:
        metrics.unregister_gauge("t_raft_term")
        metrics.unregister_gauge("t_broken")
    assert 'petra_grpc_requests_total{method="/etcdserverpb.KV/Range"}' in text
    assert (
        'petra_grpc_request_duration_seconds_bucket{method="/etcdserverpb.KV/Range",le="0.005"}'
        in text
    )
    assert 'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"}' in text
    assert 'etcd_disk_wal_fsync_duration_seconds_bucket{le="8.192"}' in text
    assert "t_raft_term 7\n" in text
    assert "t_broken NaN\n" in text
    rss = re.search(r"^process_resident_memory_bytes (\d+)$", text, re.M)
    assert rss and int(rss.group(1)) > 1_000_000


def test_every_rendered_line_is_well_formed() -> None:
    """Every non-comment line is `name{labels} value` with a numeric value."""
    metrics.REQUESTS.inc("x")
    sample = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? (-?[0-9.e+-]+|NaN|\+Inf)$")
    for line in metrics.render().splitlines():
        if not line.startswith("#"):
            assert sample.match(line), line


# --- HTTP endpoints ------------------------------------------------------------------------


async def _get(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def _run_with_server(
    health: Callable[[], Awaitable[bool]],
    scenario: Callable[[int], Awaitable[None]],
) -> None:
    async def main() -> None:
        stop = await http_endpoints.serve(["http://127.0.0.1:0"], health)
        try:
            await scenario(stop.ports[0])
        finally:
            await stop()

    asyncio.run(main())


def test_health_metrics_version() -> None:
    """/health, /metrics and /version answer with etcd's bodies and content types."""
    healthy = True

    async def health() -> bool:
        return healthy

    async def scenario(port: int) -> None:
        nonlocal healthy
        status, headers, body = await _get(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, body) == (200, b'{"health":"true"}')
        assert headers["Content-Length"] == str(len(body))
        healthy = False
        status, _, body = await _get(port, b"GET /health HTTP/1.1\r\n\r\n")
        assert (status, body) == (503, b'{"health":"false"}')
        status, headers, body = await _get(port, b"GET /version HTTP/1.0\r\n\r\n")
        assert (status, body) == (200, b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}')
        status, headers, body = await _get(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"etcd_disk_wal_fsync_duration_seconds" in body
        status, _, body = await _get(port, b"HEAD /version HTTP/1.1\r\n\r\n")
        assert (status, body) == (200, b"")

    _run_with_server(health, scenario)


def test_failing_or_slow_health_check_is_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A health callback that raises, or that does not answer in time, gives 503 false."""
    monkeypatch.setattr(http_endpoints, "HEALTH_TIMEOUT_S", 0.05)
    calls = 0
    never = asyncio.Event()

    async def health() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("no leader")
        await never.wait()
        return True

    async def scenario(port: int) -> None:
        for _ in range(2):
            status, _, body = await _get(port, b"GET /health HTTP/1.1\r\n\r\n")
            assert (status, body) == (503, b'{"health":"false"}')

    _run_with_server(health, scenario)
    assert calls == 2


def test_bad_requests_get_errors_and_server_keeps_serving() -> None:
    """Unknown paths, other methods, garbage, oversized heads are refused; /health still works."""

    async def health() -> bool:
        return True

    async def scenario(port: int) -> None:
        assert (await _get(port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
        status, headers, _ = await _get(port, b"POST /health HTTP/1.1\r\n\r\n")
        assert status == 405 and "GET" in headers["Allow"]
        assert (await _get(port, b"\x00\x01garbage\r\n\r\n"))[0] == 400
        assert (await _get(port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"))[0] == 400
        # A client that connects and vanishes without a request.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        assert (await _get(port, b"GET /health HTTP/1.1\r\n\r\n"))[0] == 200

    _run_with_server(health, scenario)


def test_serve_rejects_non_http_url() -> None:
    """A metrics URL that is not http://host:port is a clear error."""

    async def health() -> bool:
        return True

    with pytest.raises(ValueError, match=r"http\(s\)://host:port"):
        asyncio.run(http_endpoints.serve(["unix:///tmp/x"], health))


# --- systemd notify ------------------------------------------------------------------------


def test_notify_ready_on_path_socket(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """READY=1 arrives as one datagram on the socket named by NOTIFY_SOCKET."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notify.notify_ready()
        sock.settimeout(5)
        assert sock.recv(64) == b"READY=1"


def test_notify_ready_on_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NOTIFY_SOCKET starting with @ names an abstract socket (leading NUL)."""
    name = f"petra-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notify.notify_ready()
        sock.settimeout(5)
        assert sock.recv(64) == b"READY=1"


def test_notify_without_socket_or_with_dead_socket(tmp_path: pathlib.Path) -> None:
    """No NOTIFY_SOCKET: nothing sent; a socket nobody listens on: reported, not raised."""
    assert notify.notify("READY=1", {}) is False
    assert notify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


# --- gRPC health ---------------------------------------------------------------------------


def test_grpc_health_check_and_watch() -> None:
    """Check("") is SERVING, an unknown service is NOT_FOUND, Watch follows set_status."""

    async def main() -> None:
        server = grpc.aio.server()
        servicer = health_service.add_to_server(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
                call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
                first = await call.read()
                assert first.status == health_pb2.HealthCheckResponse.SERVING
                servicer.set_status("", health_service.NOT_SERVING)
                second = await asyncio.wait_for(call.read(), 5)
                assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
                call.cancel()
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_request_interceptor_counts_and_times_unary_calls() -> None:
    """Through a real aio server: every call is counted by method, unary calls are timed,
    errors included; a streaming call is counted."""
    method = "/grpc.health.v1.Health/Check"
    watch = "/grpc.health.v1.Health/Watch"
    before = (metrics.REQUESTS.get(method), metrics.REQUEST_SECONDS.count(method))
    before_watch = metrics.REQUESTS.get(watch)

    async def main() -> None:
        server = grpc.aio.server(interceptors=[metrics.RequestInterceptor()])
        health_service.add_to_server(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for _ in range(3):
                    await stub.Check(health_pb2.HealthCheckRequest(service=""))
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
                call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
                assert (await call.read()).status == health_service.SERVING
                call.cancel()
        finally:
            await server.stop(None)

    asyncio.run(main())
    assert metrics.REQUESTS.get(method) - before[0] == 4
    assert metrics.REQUEST_SECONDS.count(method) - before[1] == 4
    assert metrics.REQUESTS.get(watch) - before_watch == 1
