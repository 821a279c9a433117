"""Charts of a load run and of a comparison, as PNG files (bench.png's canvas)."""

from __future__ import annotations

from typing import Any

from bench import stats
from bench.png import BLACK, GREY, PALETTE, Canvas

WIDTH, PANEL_HEIGHT = 800, 300
MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 80, 40, 30
HISTOGRAM_BARS = 50


def _fmt(x: float) -> str:
    if x >= 1e4:
        return f"{x / 1e3:.0f}K"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}"


def _axes(
    c: Canvas, top: int, title: str, x_label: str, y_max: float, x_lo: str, x_hi: str
) -> tuple[int, int, int, int]:
    """Draws a panel's frame and labels; returns the plot area (x0, y0, x1, y1)."""
    x0, y0 = MARGIN_LEFT, top + MARGIN_TOP
    x1, y1 = WIDTH - 20, top + PANEL_HEIGHT - MARGIN_BOTTOM
    c.text(x0, top + 8, title)
    c.line(x0, y0, x0, y1, BLACK)
    c.line(x0, y1, x1, y1, BLACK)
    for frac in (0.25, 0.5, 0.75, 1.0):
        y = y1 - int((y1 - y0) * frac)
        c.line(x0 + 1, y, x1, y, GREY)
        c.text(4, y - 5, _fmt(y_max * frac))
    c.text(x0, y1 + 8, x_lo)
    c.text(x1 - 4 * 2 * len(x_hi), y1 + 8, x_hi)
    c.text((x0 + x1) // 2 - 4 * len(x_label), y1 + 24, x_label)
    return x0, y0, x1, y1


def latency_bins(latencies_s: list[float], bins: int) -> tuple[list[int], float, float]:
    """Counts of latencies in `bins` equal bins from the fastest to the p99.9 latency (the
    slowest 0.1% go in the last bin, so one outlier does not flatten the chart)."""
    lats = sorted(latencies_s)
    if not lats:
        return [0] * bins, 0.0, 0.0
    lo = lats[0]
    hi = lats[min(len(lats) - 1, int(len(lats) * 0.999))]
    width = (hi - lo) / bins or 1e-9
    counts = [0] * bins
    for x in lats:
        counts[min(bins - 1, int((x - lo) / width))] += 1
    return counts, lo, hi


def draw_histogram(c: Canvas, top: int, latencies_s: list[float], title: str) -> None:
    counts, lo, hi = latency_bins(latencies_s, HISTOGRAM_BARS)
    peak = max(counts) or 1
    x0, y0, x1, y1 = _axes(c, top, title, "latency ms", peak, _fmt(lo * 1e3), _fmt(hi * 1e3))
    bar_w = (x1 - x0) / len(counts)
    for i, n in enumerate(counts):
        h = int((y1 - y0) * n / peak)
        c.rect(x0 + int(i * bar_w) + 1, y1 - h, x0 + int((i + 1) * bar_w), y1, PALETTE[0])


def draw_series(c: Canvas, top: int, series: list[float], span_s: float, title: str) -> None:
    peak = max(series, default=0.0) or 1.0
    x0, y0, x1, y1 = _axes(c, top, title, "time s", peak, "0", _fmt(span_s))
    if len(series) < 2:
        return
    pts = [
        (x0 + int((x1 - x0) * i / (len(series) - 1)), y1 - int((y1 - y0) * v / peak))
        for i, v in enumerate(series)
    ]
    for (ax, ay), (bx, by) in zip(pts, pts[1:], strict=False):
        c.line(ax, ay, bx, by, PALETTE[1])
        c.line(ax, ay - 1, bx, by - 1, PALETTE[1])


def plot_load(result: Any, path: str) -> None:
    """Latency histogram and throughput over time of the run's first series."""
    label = next(iter(result.summaries))
    starts = result.starts_s.get(label, 0.0)
    ends = result.ends_s.get(label, [])
    summary: stats.Summary = result.summaries[label]
    c = Canvas(WIDTH, 2 * PANEL_HEIGHT)
    lats = result.latencies_s.get(label, [])
    draw_histogram(c, 0, lats, f"{label} latency ({summary.count} req)")
    span = summary.total_s or 1.0
    bucket = max(span / 100, 0.01)
    series = stats.throughput_series(ends, starts, bucket)
    draw_series(c, PANEL_HEIGHT, series, span, f"throughput req/s (mean {summary.rps:.0f})")
    with open(path, "wb") as f:
        f.write(c.png())


def plot_compare(points: list[Any], servers: list[str], clients: list[int], path: str) -> None:
    """Grouped bars: requests/s per client count, one color per server."""
    c = Canvas(WIDTH, PANEL_HEIGHT)
    peak = max((p.rps for p in points), default=0.0) or 1.0
    x0, y0, x1, y1 = _axes(c, 0, "requests/s by clients", "clients", peak, "", "")
    by = {(p.server, p.clients): p for p in points}
    group_w = (x1 - x0) / max(1, len(clients))
    bar_w = group_w * 0.8 / max(1, len(servers))
    for gi, n in enumerate(clients):
        gx = x0 + gi * group_w + group_w * 0.1
        for si, s in enumerate(servers):
            p = by.get((s, n))
            if p is None:
                continue
            h = int((y1 - y0) * p.rps / peak)
            bx = int(gx + si * bar_w)
            c.rect(bx, y1 - h, int(bx + bar_w) - 1, y1, PALETTE[si % len(PALETTE)])
        c.text(int(gx), y1 + 8, str(n))
    for si, s in enumerate(servers):
        lx = x1 - 150
        c.rect(lx, y0 + 20 * si, lx + 12, y0 + 20 * si + 12, PALETTE[si % len(PALETTE)])
        c.text(lx + 18, y0 + 20 * si + 1, s)
    with open(path, "wb") as f:
        f.write(c.png())
