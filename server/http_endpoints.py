"""/health, /metrics and /version over HTTP/1.1 on the --listen-metrics-urls (and, through
`answer`, on the client port, as etcd serves them there too).

Theory of operation. A minimal HTTP/1.1 server on asyncio streams: read one request head (at
most HEAD_BYTES_MAX, within HEAD_TIMEOUT_S), answer it, close the connection. No keep-alive and
no request bodies, which is all Prometheus scrapers, load balancers and curl need. The bodies
are etcd 3.4's: `{"health":"true"}` (200) or `{"health":"false"}` (503), the Prometheus text
of server.metrics, and `{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}`. The health callback is
the node's; if it raises or takes longer than HEALTH_TIMEOUT_S the answer is unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from urllib.parse import urlsplit

from server import metrics

log = logging.getLogger(__name__)

HEAD_BYTES_MAX = 8192
HEAD_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 1.0
VERSION_BODY = b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}'
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Health = Callable[[], Awaitable[bool]]


def _response(status: int, content_type: str, body: bytes, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    )
    if status == 405:
        head += "Allow: GET, HEAD\r\n"
    return (head + "\r\n").encode("ascii") + (b"" if head_only else body)


async def _is_healthy(health: Health) -> bool:
    try:
        return bool(await asyncio.wait_for(health(), HEALTH_TIMEOUT_S))
    except Exception as e:  # the node's check failed: that is an unhealthy answer
        log.warning("health check failed: %r", e)
        return False


async def _route(method: str, path: str, health: Health) -> bytes:
    head_only = method == "HEAD"
    if method not in ("GET", "HEAD"):
        return _response(405, TEXT, b"Method Not Allowed\n")
    route = urlsplit(path).path
    if route == "/health":
        ok = await _is_healthy(health)
        body = b'{"health":"true"}' if ok else b'{"health":"false"}'
        return _response(200 if ok else 503, JSON, body, head_only)
    if route == "/metrics":
        return _response(200, METRICS_TYPE, metrics.render().encode(), head_only)
    if route == "/version":
        return _response(200, JSON, VERSION_BODY, head_only)
    return _response(404, TEXT, b"404 page not found\n", head_only)


async def answer(head: bytes, health: Health) -> bytes:
    """The whole response to one HTTP/1.x request head (also used on the client port, whose
    gRPC server hands over connections that are not HTTP/2)."""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response(400, TEXT, b"400 Bad Request\n")
    return await _route(parts[0], parts[1], health)


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        return None
    except ConnectionError:
        return None


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, health: Health
) -> None:
    try:
        head = await _read_head(reader)
        if head is None:
            reply = _response(400, TEXT, b"400 Bad Request\n")
        else:
            reply = await answer(head, health)
        writer.write(reply)
        await writer.drain()
    except ConnectionError:
        pass  # the client went away; nothing to answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ValueError(f"metrics URL must be http(s)://host:port, got {url!r}")
    return parts.hostname, parts.port


class Listeners:
    """The stop function serve() returns; `ports` are the bound ports (useful with port 0)."""

    def __init__(self, servers: list[asyncio.Server]) -> None:
        self.servers = servers
        self.ports = [s.sockets[0].getsockname()[1] for s in servers]

    async def __call__(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()


async def serve(
    urls: Sequence[str], health: Health, context: ssl.SSLContext | None = None
) -> Listeners:
    """Listen on every URL (the https ones with TLS `context`); return an async callable that
    stops them all."""
    servers: list[asyncio.Server] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(reader, writer, health)

    try:
        for url in urls:
            host, port = _host_port(url)
            secure = context if url.startswith("https:") else None
            servers.append(
                await asyncio.start_server(on_connect, host, port, limit=HEAD_BYTES_MAX, ssl=secure)
            )
    except BaseException:
        for server in servers:
            server.close()
        raise
    return Listeners(servers)
