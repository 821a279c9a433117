"""`petra` (python -m server.main): start one member and serve the etcd v3 API until signalled.

Start-up: parse flags/env/YAML (server/config.py), open or recover the data dir, start the
node, listen on every --listen-client-urls address, register the services, then tell systemd
we are ready. SIGTERM/SIGINT stop it cleanly: stop accepting RPCs, give in-flight ones a grace
period, stop the node (the WAL is synced and closed), exit 0. Any start-up failure (bad flag,
unusable data dir, port in use, data dir of another cluster) is one line on stderr and exit 1.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import grpc

from . import cluster_service, kv_service, maintenance_service, tls
from .config import CONFIG_FILE_FLAG, FLAGS, Config, ConfigError, env_name, parse
from .node import Node
from .recovery import DataDirError

log = logging.getLogger("petra")

GRPC_OVERHEAD_BYTES = 512 * 1024
SHUTDOWN_GRACE_S = 2.0


class StartError(Exception):
    """Start-up failed; str(e) is the one line printed before exit(1)."""


def _optional(module: str) -> Any:
    """A collaborator module of another branch, or None until it is merged."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise StartError(f"invalid listen-client-urls entry {url!r}")
    host = parts.hostname
    if host == "localhost":
        host = "127.0.0.1"
    return f"[{host}]:{parts.port}" if ":" in host else f"{host}:{parts.port}"


def _grpc_server(config: Config, health: Callable[[], Awaitable[bool]]) -> Any:
    """petra's own gRPC transport (server/wire/); PETRA_GRPC=aio selects grpc.aio instead,
    for comparisons."""
    metrics = _optional("server.metrics")
    if os.environ.get("PETRA_GRPC") == "aio":
        return _aio_server(config, metrics)
    from . import gateway, http_endpoints
    from .wire.server import Server

    async def http1(head: bytes, body: bytes) -> bytes | AsyncGenerator[bytes, None]:
        # etcd's cmux sends /v3/ to its grpc-gateway and the rest to /health and friends.
        if gateway.is_gateway_request(head):
            return await gateway.answer(
                server.handler_for,
                head,
                body,
                server.max_receive_message_length,
                server.on_request,
            )
        return await http_endpoints.answer(head, health)

    server = Server(
        max_receive_message_length=config.max_request_bytes + GRPC_OVERHEAD_BYTES,
        on_request=metrics.REQUESTS.inc if metrics is not None else None,
        on_unary_done=metrics.REQUEST_SECONDS.observe if metrics is not None else None,
        http1=http1,
    )
    return server


def _aio_server(config: Config, metrics: Any) -> Any:
    options = [
        ("grpc.max_receive_message_length", config.max_request_bytes + GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", 2**31 - 1),
        # Without this, a second server could bind the same port silently (SO_REUSEPORT).
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", 2**31 - 1),
        # etcd's keepalive policy (--grpc-keepalive-min-time 5s, -interval 2h, -timeout 20s):
        # Go clients ping every 10 s or more on idle watches; gRPC's default 5-minute minimum
        # would answer those pings with GOAWAY "too_many_pings" and drop the watches.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_time_ms", 2 * 3600 * 1000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]
    interceptors = [metrics.RequestInterceptor()] if metrics is not None else []
    return grpc.aio.server(options=options, interceptors=interceptors)


def _bind(server: Any, config: Config, context: Any) -> None:
    """Listens on the client URLs; the https ones with the TLS `context`."""
    secure = context
    if context is not None and os.environ.get("PETRA_GRPC") == "aio":
        secure = tls.grpc_credentials(config)
    for url in config.listen_client_urls:
        address = _host_port(url)
        try:
            if url.startswith("https:"):
                port = server.add_secure_port(address, secure)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise StartError(f"listen tcp {address}: bind: address already in use") from exc
        if not port:
            raise StartError(f"listen tcp {address}: bind: address already in use")


async def serve(config: Config, stop_event: asyncio.Event) -> None:
    # Bind first: a start that fails on a port in use must not leave a new data dir behind.
    node_ref: list[Node] = []

    async def healthy() -> bool:
        node = node_ref[0] if node_ref else None
        return node is not None and bool(node.leader_id) and not node.applier.alarms

    server = _grpc_server(config, healthy)
    context = None
    if any(
        url.startswith("https:")
        for url in (*config.listen_client_urls, *config.listen_metrics_urls)
    ):
        try:  # unusable TLS files: one line, before anything starts
            context = tls.server_context(config)
        except tls.TLSError as exc:
            raise StartError(str(exc)) from exc
    _bind(server, config, context)
    try:
        node = await Node.start(config)
    except DataDirError as exc:
        raise StartError(str(exc)) from exc
    node_ref.append(node)
    stops: list[Callable[[], Awaitable[None]]] = []
    try:
        kv_service.add_to_server(server, node)
        maintenance_service.add_to_server(server, node)
        cluster_service.add_to_server(server, node)
        stops.extend(await _start_collaborators(server, node, config, healthy))
        _register_gauges(node)
        await server.start()
    except BaseException:
        await node.stop()
        raise
    log.info(
        "serving client requests on %s (member %x, cluster %x)",
        ",".join(config.listen_client_urls),
        node.member_id,
        node.cluster_id,
    )
    notify = _optional("server.notify")
    if notify is not None:
        notify.notify_ready()
    await stop_event.wait()
    log.info("shutting down")
    # Services first: open watch streams would otherwise hold the server for the whole grace.
    for stop in reversed(stops):
        await stop()
    await server.stop(SHUTDOWN_GRACE_S)
    await node.stop()


async def _start_collaborators(
    server: Any, node: Node, config: Config, healthy: Callable[[], Awaitable[bool]]
) -> list[Callable[[], Awaitable[None]]]:
    stops: list[Callable[[], Awaitable[None]]] = []
    health = _optional("server.health_service")
    if health is not None:
        health.add_to_server(server)
    services = _optional("server.services")
    if services is not None:
        stops.append(await services.start_services(server, node))
    http = _optional("server.http_endpoints")
    if http is not None and config.listen_metrics_urls:
        secure = any(url.startswith("https:") for url in config.listen_metrics_urls)
        context = tls.server_context(config, tls.METRICS_ALPN) if secure else None
        stops.append(await http.serve(config.listen_metrics_urls, healthy, context))
    return stops


def _register_gauges(node: Node) -> None:
    metrics = _optional("server.metrics")
    if metrics is None:
        return
    gauge = metrics.gauge
    gauge(
        "etcd_server_has_leader",
        "Whether a leader exists (1) or not (0).",
        lambda: 1.0 if node.leader_id else 0.0,
    )
    gauge(
        "etcd_server_is_leader",
        "Whether this member is the leader.",
        lambda: 1.0 if node.is_leader else 0.0,
    )
    gauge(
        "etcd_server_proposals_committed_total",
        "The committed Raft index.",
        lambda: float(node.commit_index),
    )
    gauge(
        "etcd_server_proposals_applied_total",
        "The applied Raft index.",
        lambda: float(node.applied_index),
    )
    gauge("etcd_server_term", "The Raft term.", lambda: float(node.term))
    gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "Size of the backend file.",
        lambda: float(node.store.size_bytes()),
    )
    storage = node.storage
    gauge(
        "petra_wal_entries_per_sync",
        "Mean entries per synced WAL write (group commit).",
        lambda: storage.synced_entries / max(1, storage.synced_writes),
    )
    gauge("etcd_debugging_mvcc_current_revision", "The current revision of the store.",
          lambda: float(node.store.revision))  # fmt: skip


def _configure_logging(level: str) -> None:
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
    logging.basicConfig(
        level=levels.get(level, logging.ERROR),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _main(config: Config) -> None:
    loop = asyncio.get_running_loop()
    stop_event = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    await serve(config, stop_event)


def usage() -> str:
    """What `petra --help` prints: every flag petra takes, its variable and its default."""
    defaults = Config()
    lines = [
        "usage: petra [flags]",
        "",
        "Start a petra member: etcd's flags, ETCD_* variables and --config-file YAML.",
        "",
        f"  --{CONFIG_FILE_FLAG}  ({env_name(CONFIG_FILE_FLAG)})  YAML file of flag: value; "
        "flags and variables are then ignored",
    ]
    for flag, (field, _parser) in FLAGS.items():
        default = getattr(defaults, field)
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        lines.append(f"  --{flag}  ({env_name(flag)})  default: {shown!r}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "-help", "--help") for a in args):
        print(usage())
        return
    if any(a in ("-version", "--version") for a in args):
        print(f"petra Version: {version('petra')}\netcd API version: 3.4")
        return
    try:
        config = parse(args, os.environ)
    except ConfigError as exc:
        print(f"petra: {exc}", file=sys.stderr)
        sys.exit(1)
    _configure_logging(config.log_level)
    try:
        asyncio.run(_main(config))
    except StartError as exc:
        print(f"petra: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
