"""The gRPC health service (grpc.health.v1.Health) on the client port, as etcd registers it.

Theory of operation. etcd sets service "" to SERVING once it serves clients and never changes it
(3.4); load balancers and `grpc_health_probe` use it as a liveness check. Check answers from a
status table; an unknown service name is NOT_FOUND, as the standard servicer does. Watch sends
the current status, then each change, until the client goes away. set_status() lets the node
report NOT_SERVING while it shuts down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from api.grpc_health.v1 import health_pb2, health_pb2_grpc

Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self._status: dict[str, Status] = {"": SERVING}
        self._changed = asyncio.Event()

    def set_status(self, service: str, status: Status) -> None:
        self._status[service] = status
        # Wake every watcher, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    async def Check(  # noqa: N802 (gRPC method name)
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
            raise AssertionError("abort() raises")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # noqa: N802 (gRPC method name)
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: Status | None = None
        while True:
            changed = self._changed
            status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await changed.wait()


def add_to_server(grpc_server: grpc.aio.Server) -> HealthServicer:
    """Register grpc.health.v1.Health with "" = SERVING; returns the servicer for set_status."""
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
    return servicer
