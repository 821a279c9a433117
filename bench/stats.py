"""Latency statistics and the text report, computed exactly as etcd's benchmark tool does
(pkg/report): population stddev, a 10-bucket linear histogram from fastest to slowest, and
percentiles taken as the first sample whose rank reaches the percentile.

All latencies are in seconds; pure functions over lists, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PERCENTILES = (10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9)
HISTOGRAM_BUCKETS = 10
BAR_WIDTH_MAX = 40
BAR_CHAR = "∎"


@dataclass(frozen=True, slots=True)
class Summary:
    """One workload's figures. Invariant: count == len(sorted_latencies_s)."""

    count: int
    errors: int
    total_s: float
    slowest_s: float
    fastest_s: float
    average_s: float
    stddev_s: float
    rps: float
    percentiles_s: dict[float, float]
    histogram: list[tuple[float, int]]
    error_kinds: dict[str, int] = field(default_factory=dict)


def percentiles(sorted_latencies_s: list[float]) -> dict[float, float]:
    """etcd's rule, kept exactly (so figures compare): walk the samples in order; sample i
    answers the next unanswered percentile p when i*100/n >= p, one percentile per sample.
    Percentiles left unanswered (tiny samples) are absent."""
    out: dict[float, float] = {}
    n = len(sorted_latencies_s)
    j = 0
    for i in range(n):
        if j >= len(PERCENTILES):
            break
        if i * 100.0 / n >= PERCENTILES[j]:
            out[PERCENTILES[j]] = sorted_latencies_s[i]
            j += 1
    return out


def histogram(sorted_latencies_s: list[float]) -> list[tuple[float, int]]:
    """Eleven (upper bound, count) pairs: fastest + k*(slowest-fastest)/10, the last = slowest.
    Each sample counts in the first bucket whose bound is >= it."""
    if not sorted_latencies_s:
        return []
    fastest, slowest = sorted_latencies_s[0], sorted_latencies_s[-1]
    width = (slowest - fastest) / HISTOGRAM_BUCKETS
    bounds = [fastest + width * i for i in range(HISTOGRAM_BUCKETS)] + [slowest]
    counts = [0] * len(bounds)
    b = 0
    for lat in sorted_latencies_s:
        while lat > bounds[b] and b < len(bounds) - 1:
            b += 1
        counts[b] += 1
    return list(zip(bounds, counts, strict=True))


def summarize(
    latencies_s: list[float],
    total_s: float,
    errors: int = 0,
    error_kinds: dict[str, int] | None = None,
) -> Summary:
    """The figures of one run: latencies of the successful requests, wall time of the run."""
    lats = sorted(latencies_s)
    n = len(lats)
    if n == 0:
        return Summary(0, errors, total_s, 0.0, 0.0, 0.0, 0.0, 0.0, {}, [], error_kinds or {})
    average = math.fsum(lats) / n
    variance = math.fsum((x - average) ** 2 for x in lats) / n
    return Summary(
        count=n,
        errors=errors,
        total_s=total_s,
        slowest_s=lats[-1],
        fastest_s=lats[0],
        average_s=average,
        stddev_s=math.sqrt(variance),
        rps=n / total_s if total_s > 0 else 0.0,
        percentiles_s=percentiles(lats),
        histogram=histogram(lats),
        error_kinds=dict(error_kinds or {}),
    )


def format_report(s: Summary, title: str = "") -> str:
    """The text etcd's benchmark prints (same labels, same number formats)."""
    lines = []
    if title:
        lines.append(title)
    lines += [
        "",
        "Summary:",
        f"  Total:\t{s.total_s:.4f} secs.",
        f"  Slowest:\t{s.slowest_s:.4f} secs.",
        f"  Fastest:\t{s.fastest_s:.4f} secs.",
        f"  Average:\t{s.average_s:.4f} secs.",
        f"  Stddev:\t{s.stddev_s:.4f} secs.",
        f"  Requests/sec:\t{s.rps:.4f}",
        "",
        "Response time histogram:",
    ]
    peak = max((c for _, c in s.histogram), default=0)
    for bound, count in s.histogram:
        bar = BAR_CHAR * (count * BAR_WIDTH_MAX // peak if peak else 0)
        lines.append(f"  {bound:4.4f} [{count}]\t|{bar}")
    lines += ["", "Latency distribution:"]
    for p, v in s.percentiles_s.items():
        if v > 0:
            lines.append(f"  {p:g}% in {v:4.4f} secs.")
    if s.errors:
        lines += ["", "Error distribution:"]
        for kind, count in sorted(s.error_kinds.items(), key=lambda kv: -kv[1]):
            lines.append(f"  [{count}]\t{kind}")
    return "\n".join(lines) + "\n"


def as_json(s: Summary) -> dict[str, object]:
    """The summary as plain JSON values (percentile keys as strings like 'p99.9')."""
    return {
        "count": s.count,
        "errors": s.errors,
        "error_kinds": s.error_kinds,
        "total_s": s.total_s,
        "slowest_s": s.slowest_s,
        "fastest_s": s.fastest_s,
        "average_s": s.average_s,
        "stddev_s": s.stddev_s,
        "requests_per_s": s.rps,
        "percentiles_s": {f"p{p:g}": v for p, v in s.percentiles_s.items()},
        "histogram": [{"le_s": b, "count": c} for b, c in s.histogram],
    }


def throughput_series(
    completion_times_s: list[float], start_s: float, bucket_s: float
) -> list[float]:
    """Requests per second in consecutive buckets of bucket_s from start_s (for the plot)."""
    if not completion_times_s or bucket_s <= 0:
        return []
    last = max(completion_times_s)
    n = int((last - start_s) // bucket_s) + 1
    counts = [0] * max(n, 1)
    for t in completion_times_s:
        i = int((t - start_s) // bucket_s)
        counts[min(max(i, 0), len(counts) - 1)] += 1
    return [c / bucket_s for c in counts]


def median(values: list[float]) -> float:
    """The median (mean of the middle two for an even count); 0.0 for no values."""
    v = sorted(values)
    if not v:
        return 0.0
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
