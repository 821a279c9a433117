"""Counts every RPC and times the unary ones for /metrics (server/metrics.py).

One interceptor for all services, so the services need no metrics code of their own. The
cost on the hot path is one dict increment, two clock reads and one extra coroutine frame.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from . import metrics


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        method = details.method
        metrics.REQUESTS.inc(method)
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = self._wrapped.get(method)
        if wrapped is None or wrapped[0] is not handler:
            wrapped = (handler, _timed(handler, method))
            self._wrapped[method] = wrapped
        return wrapped[1]


def _timed(handler: Any, method: str) -> Any:
    behavior = handler.unary_unary
    observe = metrics.REQUEST_SECONDS.observe

    async def timed(request: Any, context: Any) -> Any:
        started_s = time.perf_counter()
        try:
            return await behavior(request, context)
        finally:
            observe(method, time.perf_counter() - started_s)

    return grpc.unary_unary_rpc_method_handler(
        timed,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
