"""petra-bench's statistics match etcd's benchmark tool (pkg/report) figure for figure."""

from __future__ import annotations

import math

from bench import stats

# 30 latencies in ms, and what etcd 3.4.23's pkg/report prints for them (captured once by
# feeding the same Results to report.NewReport("%4.4f") from a small Go program).
SAMPLE_MS = [
    3,
    1,
    4,
    1,
    5,
    9,
    2,
    6,
    5,
    3,
    5,
    8,
    9,
    7,
    9,
    3,
    2,
    3,
    8,
    4,
    6,
    2,
    6,
    4,
    3,
    3,
    8,
    3,
    2,
    7,
]
ETCD_REPORT_TAIL = """  Slowest:\t0.0090 secs.
  Fastest:\t0.0010 secs.
  Average:\t0.0047 secs.
  Stddev:\t0.0025 secs.
  Requests/sec:\t30.0000

Response time histogram:
  0.0010 [2]\t|∎∎∎∎∎∎∎∎∎∎∎
  0.0018 [0]\t|
  0.0026 [4]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎
  0.0034 [7]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎
  0.0042 [3]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎
  0.0050 [3]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎
  0.0058 [0]\t|
  0.0066 [3]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎
  0.0074 [2]\t|∎∎∎∎∎∎∎∎∎∎∎
  0.0082 [3]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎
  0.0090 [3]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎

Latency distribution:
  10% in 0.0020 secs.
  25% in 0.0030 secs.
  50% in 0.0040 secs.
  75% in 0.0070 secs.
  90% in 0.0090 secs.
  95% in 0.0090 secs.
"""


def test_report_text_matches_etcd_benchmark() -> None:
    """The whole report (after the wall-time line) is byte-identical to etcd's for the same
    samples; Total is fixed at 1 s so requests/s = 30."""
    s = stats.summarize([x / 1000 for x in SAMPLE_MS], total_s=1.0)
    text = stats.format_report(s)
    assert text.startswith("\nSummary:\n  Total:\t1.0000 secs.\n")
    assert text.split("secs.\n", 1)[1] == ETCD_REPORT_TAIL


def test_percentiles_take_one_sample_each() -> None:
    """etcd's rule answers at most one percentile per sample: with 10 samples, p10 is the 2nd
    sample, p25 the 4th, p50 the 6th, p75 the 9th, p90 the 10th; p95 and above are absent."""
    lats = [i / 1000 for i in range(1, 11)]
    p = stats.percentiles(lats)
    assert p == {10.0: 0.002, 25.0: 0.004, 50.0: 0.006, 75.0: 0.009, 90.0: 0.010}


def test_percentiles_of_a_large_uniform_sample() -> None:
    """With n = 10000 samples 0..9999, the p-th percentile is sample ceil(p*n/100)."""
    lats = [float(i) for i in range(10000)]
    p = stats.percentiles(lats)
    for q in stats.PERCENTILES:
        assert p[q] == math.ceil(q * 100 - 1e-9), q


def test_histogram_buckets_and_edges() -> None:
    """Eleven bounds from fastest to slowest; a sample counts in the first bound >= it; the
    counts add up to the samples."""
    lats = [i / 1000 for i in range(1, 11)]
    h = stats.histogram(lats)
    assert len(h) == 11
    assert h[0] == (0.001, 1) and h[-1] == (0.010, 1)
    assert [c for _, c in h] == [1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert sum(c for _, c in h) == len(lats)


def test_summary_moments_and_rate() -> None:
    """Average, population stddev and requests/s of a known sample."""
    s = stats.summarize([0.001, 0.003], total_s=0.5)
    assert math.isclose(s.average_s, 0.002)
    assert math.isclose(s.stddev_s, 0.001)
    assert s.rps == 4.0 and s.count == 2
    assert s.fastest_s == 0.001 and s.slowest_s == 0.003


def test_empty_sample_and_errors_are_reported() -> None:
    """No successful request: zero figures, and the error distribution is printed."""
    s = stats.summarize([], 1.0, errors=3, error_kinds={"UNAVAILABLE: down": 3})
    assert s.count == 0 and s.rps == 0.0
    text = stats.format_report(s)
    assert "Error distribution:" in text and "[3]\tUNAVAILABLE: down" in text


def test_throughput_series_and_median() -> None:
    """Completions bucketed per interval give requests/s; the median of even counts averages."""
    series = stats.throughput_series([0.05, 0.06, 0.15, 0.35], start_s=0.0, bucket_s=0.1)
    assert series == [20.0, 10.0, 0.0, 10.0]
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert stats.median([]) == 0.0
