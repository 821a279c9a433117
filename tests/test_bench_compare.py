"""The comparison table: medians per (server, clients) point and the petra ratios."""

from __future__ import annotations

from bench import stats
from bench.compare import Point, format_table, medians, parse_clients


def summary(rps: float, p50_s: float, p99_s: float) -> stats.Summary:
    return stats.Summary(
        count=1, errors=0, total_s=1.0, slowest_s=p99_s, fastest_s=p50_s, average_s=p50_s,
        stddev_s=0.0, rps=rps, percentiles_s={50.0: p50_s, 99.0: p99_s}, histogram=[],
    )  # fmt: skip


def test_medians_of_repeats() -> None:
    runs = [summary(100, 0.001, 0.010), summary(300, 0.003, 0.030), summary(200, 0.002, 0.020)]
    assert medians("etcd", 64, runs) == Point("etcd", 64, 200, 0.002, 0.020, 3)


def test_table_rows_and_ratios() -> None:
    """petra/etcd and petra/ceiling are req/s ratios; a missing point prints '-'."""
    points = [
        Point("petra", 1, 100, 0.001, 0.002, 3),
        Point("etcd", 1, 400, 0.001, 0.002, 3),
        Point("ceiling", 1, 200, 0.001, 0.002, 3),
        Point("etcd", 8, 800, 0.004, 0.008, 3),
    ]
    lines = format_table(points, ["petra", "etcd", "ceiling"], [1, 8]).splitlines()
    assert lines[0].split()[-2:] == ["petra/etcd", "petra/ceiling"]
    one = lines[1].split()
    assert one[0] == "1" and one[1] == "100.0" and one[4] == "400.0"
    assert one[-2:] == ["0.25", "0.50"]
    eight = lines[2].split()
    assert eight[0] == "8" and eight[1] == "-" and eight[4] == "800.0" and eight[-1] == "-"
    assert format_table(points, ["etcd"], [1]).splitlines()[0].split()[-1] == "ms"
    assert parse_clients("1, 16,64,") == [1, 16, 64]
