"""Figures for the services: watch fan-out, keepalive rate, lock hand-over rate.

`python -m bench.services [--kind petra|etcd|both] [--streams 200] [--puts 500]` starts a
fresh one-member node of each kind on free loopback ports (data in a temporary directory),
drives it with grpc.aio clients and prints:
- watch fan-out: events delivered per second to `streams` streams each watching one key while
  `puts` puts are written one after another, and the time from the last put to its last delivery;
- keepalive: LeaseKeepAlive round trips per second on one stream;
- lock: Lock + Unlock pairs per second by one client (each a Txn, a read and a delete).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator

import grpc

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from api.v3lockpb import v3lock_pb2, v3lock_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def node(kind: str) -> Iterator[str]:
    client, peer = _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        args = [
            "--name", "b1", "--data-dir", os.path.join(tmp, "data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"b1={peer_url}",
        ]  # fmt: skip
        command = ["/usr/bin/etcd"] if kind == "etcd" else [sys.executable, "-m", "server.main"]
        profile = os.environ.get("PETRA_PROFILE")
        if kind == "petra" and profile:
            command = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "server.main"]
        env = {**os.environ, "PYTHONPATH": ROOT}
        with open(os.path.join(tmp, "log"), "wb") as log:
            proc = subprocess.Popen([*command, *args], cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            yield f"127.0.0.1:{client}"
        finally:
            proc.terminate()
            proc.wait(10)


@contextlib.asynccontextmanager
async def channel(endpoint: str) -> AsyncIterator[grpc.aio.Channel]:
    ch = grpc.aio.insecure_channel(endpoint)
    kv = rpc_pb2_grpc.KVStub(ch)
    deadline = time.monotonic() + 30
    while True:
        try:
            await kv.Range(rpc_pb2.RangeRequest(key=b"ready"), timeout=2)
            break
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    try:
        yield ch
    finally:
        await ch.close()


async def watch_fanout(ch: grpc.aio.Channel, streams: int, puts: int) -> str:
    stub, kv = rpc_pb2_grpc.WatchStub(ch), rpc_pb2_grpc.KVStub(ch)
    calls = [stub.Watch() for _ in range(streams)]
    create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"fan"))
    for call in calls:
        await call.write(create)
    for call in calls:
        assert (await call.read()).created
    last_delivery = [0.0]

    async def drain(call: grpc.aio.StreamStreamCall) -> None:
        seen = 0
        while seen < puts:
            seen += len((await call.read()).events)
        last_delivery[0] = max(last_delivery[0], time.perf_counter())

    readers = [asyncio.create_task(drain(call)) for call in calls]
    start = time.perf_counter()
    for i in range(puts):
        await kv.Put(rpc_pb2.PutRequest(key=b"fan", value=b"%d" % i))
    last_put = time.perf_counter()
    await asyncio.gather(*readers)
    for call in calls:
        call.cancel()
    elapsed = last_delivery[0] - start
    return (
        f"watch fan-out: {streams} streams x {puts} puts: {streams * puts / elapsed:,.0f} "
        f"events/s delivered, puts {puts / (last_put - start):,.0f}/s, "
        f"last delivery {1000 * (last_delivery[0] - last_put):.1f} ms after the last put"
    )


async def keepalive_rate(ch: grpc.aio.Channel, count: int) -> str:
    lease = rpc_pb2_grpc.LeaseStub(ch)
    lease_id = (await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))).ID
    call = lease.LeaseKeepAlive()
    start = time.perf_counter()
    for _ in range(count):
        await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        assert (await call.read()).TTL == 60
    elapsed = time.perf_counter() - start
    call.cancel()
    return f"keepalive: {count / elapsed:,.0f} round trips/s on one stream"


async def lock_rate(ch: grpc.aio.Channel, count: int) -> str:
    lease = rpc_pb2_grpc.LeaseStub(ch)
    lease_id = (await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))).ID
    lock = v3lock_pb2_grpc.LockStub(ch)
    start = time.perf_counter()
    for _ in range(count):
        held = await lock.Lock(v3lock_pb2.LockRequest(name=b"bench", lease=lease_id))
        await lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key))
    elapsed = time.perf_counter() - start
    return f"lock: {count / elapsed:,.0f} Lock+Unlock pairs/s (one client)"


async def run(kind: str, streams: int, puts: int) -> None:
    with node(kind) as endpoint:
        async with channel(endpoint) as ch:
            print(f"[{kind}]", await watch_fanout(ch, streams, puts), flush=True)
            print(f"[{kind}]", await keepalive_rate(ch, 2000), flush=True)
            print(f"[{kind}]", await lock_rate(ch, 300), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("petra", "etcd", "both"), default="both")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--puts", type=int, default=500)
    args = parser.parse_args()
    for kind in ("etcd", "petra") if args.kind == "both" else (args.kind,):
        asyncio.run(run(kind, args.streams, args.puts))


if __name__ == "__main__":
    main()
