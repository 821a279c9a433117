"""What one Put costs the client, in CPU µs, for several ways of calling gRPC from Python.

    python -m bench.client_cost [--endpoint host:port] [--total 20000] [--clients 64]

Without --endpoint it starts bench/server_ceiling.py in its own process. Each variant runs
in this one process (no worker processes) and reports requests/s and the process's CPU per
request, so the hot-path choices of bench/load.py can be checked by measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from api.etcdserverpb import rpc_pb2 as pb
from api.etcdserverpb import rpc_pb2_grpc as pb_grpc
from client import wire
from client.common import CHANNEL_OPTIONS, KV_PUT

NO_RETRIES = (*CHANNEL_OPTIONS, ("grpc.enable_retries", 0))


async def run_aio(target: str, total: int, clients: int, options: Any, stub: bool) -> None:
    channel = aio.insecure_channel(target, options=options)
    await channel.channel_ready()
    if stub:
        put = pb_grpc.KVStub(channel).Put
        req: Any = pb.PutRequest(key=b"k" * 8, value=b"v" * 256)
    else:
        put = channel.unary_unary(KV_PUT)
        req = wire.put_request(b"k" * 8, b"v" * 256)
    left = total

    async def one() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await put(req, timeout=30)

    await asyncio.gather(*(one() for _ in range(clients)))
    await channel.close()


def run_future(target: str, total: int, clients: int) -> None:
    """Sync channel, `future()` calls chained from their done-callbacks."""
    import threading

    channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=10)
    put = channel.unary_unary(KV_PUT)
    req = wire.put_request(b"k" * 8, b"v" * 256)
    lock, done = threading.Lock(), threading.Event()
    state = {"left": total - clients, "inflight": clients}

    def issue() -> None:
        put.future(req, timeout=30).add_done_callback(finished)

    def finished(_: Any) -> None:
        with lock:
            again = state["left"] > 0
            if again:
                state["left"] -= 1
            else:
                state["inflight"] -= 1
                if state["inflight"] == 0:
                    done.set()
        if again:
            issue()

    for _ in range(clients):
        issue()
    done.wait()
    channel.close()


def measure(name: str, total: int, fn: Callable[[], None]) -> None:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    cpu_s, wall_s = time.process_time() - c0, time.perf_counter() - t0
    print(f"{name:34} {total / wall_s:9.0f} req/s {1e6 * cpu_s / total:7.1f} µs CPU/request")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", default="")
    p.add_argument("--total", type=int, default=20000)
    p.add_argument("--clients", type=int, default=64)
    a = p.parse_args(argv)
    from bench.servers import ServerProcess, free_port

    with tempfile.TemporaryDirectory(prefix="petra-bench-cost-") as tmp:
        server = None
        target = a.endpoint
        if not target:
            port = free_port()
            argv = [sys.executable, "-m", "bench.server_ceiling", str(port)]
            server = ServerProcess("ceiling", argv, Path(tmp), Path(tmp) / "log", client_port=port)
            server.launch()
            target = f"127.0.0.1:{port}"
        try:
            n, c = a.total, a.clients
            opts, raw = CHANNEL_OPTIONS, False
            variants: list[tuple[str, Callable[[], None]]] = [
                (
                    "aio raw bytes (petra-bench)",
                    lambda: asyncio.run(run_aio(target, n, c, opts, raw)),
                ),
                (
                    "aio raw bytes, retries off",
                    lambda: asyncio.run(run_aio(target, n, c, NO_RETRIES, raw)),
                ),
                ("aio protobuf stub", lambda: asyncio.run(run_aio(target, n, c, opts, True))),
                ("sync future() + callbacks", lambda: run_future(target, n, c)),
            ]
            for name, fn in variants:
                measure(name, n, fn)
        finally:
            if server is not None:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
