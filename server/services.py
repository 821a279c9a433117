"""Assembles the services of this part of the node: Watch, Lease, Lock and Election on the
gRPC server, and the two background loops, the lessor's expiry and the auto-compactor.

`start_services` must run on the node's event loop before the gRPC server starts (servicers
are registered then); the function it returns stops the loops and drops every watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from api.etcdserverpb import rpc_pb2_grpc
from api.v3electionpb import v3election_pb2_grpc
from api.v3lockpb import v3lock_pb2_grpc
from server import metrics
from server.compactor import Compactor, make_policy
from server.election_service import ElectionService
from server.lease_service import IdGenerator, LeaseService
from server.lessor import Lessor, min_lease_ttl_s
from server.lock_service import LockService
from server.watch_service import PROGRESS_NOTIFY_INTERVAL_S, WatchService


@dataclass(slots=True)
class Services:
    lessor: Lessor
    lease: LeaseService
    watch: WatchService
    lock: LockService
    election: ElectionService
    compactor: Compactor | None
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in list(self.watch.streams):
            stream.close()


def build_services(
    node: Any,
    *,
    clock: Callable[[], float] = time.monotonic,
    watch_progress_notify_interval_s: float = PROGRESS_NOTIFY_INTERVAL_S,
) -> Services:
    """The services and loops, not yet registered or started (tests use this directly)."""
    config = node.config
    lessor = Lessor(node, clock=clock, extend_s=config.election_timeout_ms / 1000)
    lease = LeaseService(
        node,
        lessor,
        min_ttl_s=min_lease_ttl_s(config.election_timeout_ms),
        ids=IdGenerator(node.member_id),
    )

    async def grant_session(ttl_s: int) -> int:
        return (await lease.grant(0, ttl_s)).ID

    policy = make_policy(config.auto_compaction_mode, config.auto_compaction_retention, clock())
    return Services(
        lessor=lessor,
        lease=lease,
        watch=WatchService(node, progress_interval_s=watch_progress_notify_interval_s),
        lock=LockService(node, grant_session),
        election=ElectionService(node, grant_session),
        compactor=Compactor(node, policy, clock=clock) if policy is not None else None,
        tasks=[],
    )


async def start_services(
    grpc_server: Any,
    node: Any,
    *,
    watch_progress_notify_interval_s: float = PROGRESS_NOTIFY_INTERVAL_S,
) -> Callable[[], Awaitable[None]]:
    """Registers Watch, Lease, Lock and Election; starts the lessor and the compactor."""
    services = build_services(
        node, watch_progress_notify_interval_s=watch_progress_notify_interval_s
    )
    register(grpc_server, services)
    start(node, services)
    register_gauges(services)
    return services.stop


def register_gauges(services: Services) -> None:
    watch, lessor = services.watch, services.lessor
    metrics.gauge(
        "etcd_debugging_mvcc_watcher_total",
        "Total number of watchers.",
        lambda: float(watch.watcher_count()),
    )
    metrics.gauge(
        "etcd_debugging_mvcc_watch_stream_total",
        "Total number of watch streams.",
        lambda: float(len(watch.streams)),
    )
    metrics.gauge("petra_leases", "Leases the lessor tracks.", lambda: float(len(lessor.leases)))


def register(grpc_server: Any, services: Services) -> None:
    adders: tuple[tuple[Callable[[Any, Any], None], Any], ...] = (
        (rpc_pb2_grpc.add_WatchServicer_to_server, services.watch),
        (rpc_pb2_grpc.add_LeaseServicer_to_server, services.lease),
        (v3lock_pb2_grpc.add_LockServicer_to_server, services.lock),
        (v3election_pb2_grpc.add_ElectionServicer_to_server, services.election),
    )
    for add, servicer in adders:
        add(servicer, grpc_server)


def start(node: Any, services: Services, *, loops: bool = True) -> None:
    """Loads the leases and follows leadership; `loops=False` leaves the timed loops to the
    caller (tests drive them with a fake clock)."""
    services.lessor.restore(primary=node.is_leader)
    node.on_leader_change(services.lessor.on_leader_change)
    if not loops:
        return
    services.tasks.append(asyncio.create_task(services.lessor.run()))
    if services.compactor is not None:
        services.tasks.append(asyncio.create_task(services.compactor.run()))
