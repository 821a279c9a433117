"""Prometheus metrics of the node, rendered in the text exposition format (version 0.0.4).

Theory of operation. The hot path only increments numbers in dicts: `REQUESTS.inc(method)` and
`REQUEST_SECONDS.observe(method, seconds)` on the event loop, `WAL_FSYNC_SECONDS.observe(None,
seconds)` on the storage thread. Each metric has a single writer thread, so no lock is taken;
`render()` may run on another thread and reads the dicts as they are (a scrape can see a bucket
count one observation ahead of the sum, which Prometheus tolerates). Gauges are callbacks that
their owners register (`gauge(name, help, fn)`); they are read only when /metrics is scraped.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

# etcd's fsync histogram: 1 ms doubling 14 times (etcd_disk_wal_fsync_duration_seconds).
FSYNC_BUCKETS_S = tuple(0.001 * 2**i for i in range(14))
# go-grpc-prometheus' default buckets for handling time.
REQUEST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + text + "}" if text else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Counter:
    """A counter with at most one label; `inc(label_value)`."""

    def __init__(self, name: str, help_text: str, label: str | None = None) -> None:
        self.name = name
        self.help = help_text
        self.label = label
        self.values: dict[str | None, float] = {}

    def inc(self, label_value: str | None = None, amount: float = 1.0) -> None:
        self.values[label_value] = self.values.get(label_value, 0.0) + amount

    def get(self, label_value: str | None = None) -> float:
        return self.values.get(label_value, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for value, count in sorted(self.values.items(), key=lambda kv: str(kv[0])):
            pairs = [(self.label, value)] if self.label and value is not None else []
            lines.append(f"{self.name}{_labels(pairs)} {_number(count)}")
        return lines


class _Series:
    """One histogram series: per-bucket counts (not cumulative), sum and count."""

    __slots__ = ("buckets", "sum", "count")

    def __init__(self, n_buckets: int) -> None:
        self.buckets = [0] * (n_buckets + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0


class Histogram:
    """A histogram with at most one label; `observe(label_value, seconds)`."""

    def __init__(
        self, name: str, help_text: str, bounds: tuple[float, ...], label: str | None = None
    ) -> None:
        assert list(bounds) == sorted(bounds), "bucket bounds must ascend"
        self.name = name
        self.help = help_text
        self.bounds = bounds
        self.label = label
        self.series: dict[str | None, _Series] = {}

    def observe(self, label_value: str | None, value: float) -> None:
        series = self.series.get(label_value)
        if series is None:
            series = self.series[label_value] = _Series(len(self.bounds))
        series.buckets[bisect.bisect_left(self.bounds, value)] += 1
        series.sum += value
        series.count += 1

    def count(self, label_value: str | None = None) -> int:
        series = self.series.get(label_value)
        return series.count if series else 0

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for value, series in sorted(self.series.items(), key=lambda kv: str(kv[0])):
            base = [(self.label, value)] if self.label and value is not None else []
            cumulative = 0
            for bound, n in zip((*self.bounds, math.inf), series.buckets, strict=True):
                cumulative += n
                le = _labels([*base, ("le", _number(bound))])
                lines.append(f"{self.name}_bucket{le} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(base)} {_number(series.sum)}")
            lines.append(f"{self.name}_count{_labels(base)} {series.count}")
        return lines


REQUESTS = Counter("petra_grpc_requests_total", "gRPC requests received, by method.", "method")
REQUEST_SECONDS = Histogram(
    "petra_grpc_request_duration_seconds",
    "Time to handle a gRPC request, by method.",
    REQUEST_BUCKETS_S,
    "method",
)
WAL_FSYNC_SECONDS = Histogram(
    "etcd_disk_wal_fsync_duration_seconds",
    "The latency distributions of fsync called by WAL.",
    FSYNC_BUCKETS_S,
)

_gauges: dict[str, tuple[str, Callable[[], float]]] = {}


def gauge(name: str, help_text: str, fn: Callable[[], float]) -> None:
    """Register (or replace) a gauge whose value is fn() at scrape time."""
    _gauges[name] = (help_text, fn)


def unregister_gauge(name: str) -> None:
    _gauges.pop(name, None)


def _rss_bytes() -> float:
    """Resident set size from /proc (Linux); 0 where that file does not exist."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _render_gauges() -> list[str]:
    lines = []
    for name, (help_text, fn) in sorted(_gauges.items()):
        try:
            value = float(fn())
        except Exception:  # a broken gauge must not break the scrape of the others
            value = math.nan
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
    return lines


def render() -> str:
    """All metrics in the Prometheus text format."""
    lines: list[str] = []
    for metric in (REQUESTS, REQUEST_SECONDS, WAL_FSYNC_SECONDS):
        lines += metric.render()
    lines += _render_gauges()
    return "\n".join(lines) + "\n"


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Counts every gRPC request by method and times the unary ones (REQUESTS and
    REQUEST_SECONDS). Pass it to `grpc.aio.server(interceptors=[RequestInterceptor()])`.
    Streams are counted when they open; their duration is a session length, not a latency,
    so it is not observed."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        REQUESTS.inc(method)
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behaviour = handler.unary_unary

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                return await behaviour(request, context)
            finally:
                REQUEST_SECONDS.observe(method, time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


gauge("process_resident_memory_bytes", "Resident memory size in bytes.", _rss_bytes)
