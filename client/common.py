"""What the blocking and the asyncio client share: endpoint parsing, channel options, paths."""

from __future__ import annotations

# Reconnect quickly after a server restart: gRPC's default backoff starts at 1 s and grows to
# 120 s, which would make a crash test measure the client's backoff instead of the server.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Each channel gets its own TCP connection (etcd's --conns means real connections).
    ("grpc.use_local_subchannel_pool", 1),
)

KV_PUT = "/etcdserverpb.KV/Put"
KV_RANGE = "/etcdserverpb.KV/Range"
KV_TXN = "/etcdserverpb.KV/Txn"
KV_DELETE_RANGE = "/etcdserverpb.KV/DeleteRange"


class ClientError(Exception):
    """A request the client could not make (bad endpoint, ...)."""


def parse_endpoint(endpoint: str) -> str:
    """Turns 'http://127.0.0.1:2379' or '127.0.0.1:2379' into gRPC's 'host:port' target."""
    target = endpoint.strip()
    for scheme in ("http://", "unix://"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
    if target.startswith("https://"):
        raise ClientError(f"TLS endpoints are not supported: {endpoint}")
    target = target.rstrip("/")
    if not target or ":" not in target:
        raise ClientError(f"endpoint needs host:port: {endpoint!r}")
    return target


def parse_endpoints(endpoints: str) -> list[str]:
    """A comma-separated list of endpoints, as etcdctl's --endpoints takes it."""
    targets = [parse_endpoint(e) for e in endpoints.split(",") if e.strip()]
    if not targets:
        raise ClientError("no endpoint given")
    return targets


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a range cover every key starting with prefix (etcd's rule)."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # all bytes 0xff: to the end of the keyspace
