"""Comparison mode: the same workload against a fresh petra and a fresh etcd, in alternation,
repeated; a table of medians with the ratio petra/etcd. And `ceiling`: a do-nothing grpc.aio
KV.Put server measured the same way, the bound petra's own overheads are compared against."""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import stats
from bench.workloads import LoadSpec


@dataclass(frozen=True, slots=True)
class Point:
    """The median figures of one (server, clients) point over the repeats."""

    server: str
    clients: int
    rps: float
    p50_s: float
    p99_s: float
    runs: int


def add_parsers(sub: Any) -> None:
    from bench.cli import add_load_options

    p = sub.add_parser("compare", help="petra vs etcd, fresh servers, medians of repeats")
    add_load_options(p, "put")
    p.add_argument("--workload", default="put", choices=("put", "range", "txn-put", "txn-mixed"))
    p.add_argument("--clients-list", "--clients-points", dest="clients_list", default="1,16,64,256")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--servers", default="petra,etcd", help="petra, etcd and/or ceiling")
    p.set_defaults(run=cmd_compare)
    c = sub.add_parser("ceiling", help="a do-nothing grpc.aio KV.Put server, measured")
    add_load_options(c, "put")
    c.set_defaults(run=cmd_ceiling)


def parse_clients(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def measure(spec: LoadSpec) -> stats.Summary:
    from bench.load import default_procs, run_load

    spec = replace(spec, procs=default_procs(spec))
    result = run_load(spec, show_progress=False)
    label = next(iter(result.summaries))
    for w in result.warnings:
        print(w, file=sys.stderr)
    return result.summaries[label]


def medians(server: str, clients: int, runs: list[stats.Summary]) -> Point:
    return Point(
        server,
        clients,
        stats.median([r.rps for r in runs]),
        stats.median([r.percentiles_s.get(50.0, 0.0) for r in runs]),
        stats.median([r.percentiles_s.get(99.0, 0.0) for r in runs]),
        len(runs),
    )


def format_table(points: list[Point], servers: list[str], clients: list[int]) -> str:
    """One row per client count: req/s, p50 and p99 per server, and the petra/etcd ratio."""
    by = {(p.server, p.clients): p for p in points}
    head = f"{'clients':>8}"
    for s in servers:
        head += f" {s + ' req/s':>14} {s + ' p50 ms':>13} {s + ' p99 ms':>13}"
    ratios = [
        (a, b) for a, b in (("petra", "etcd"), ("petra", "ceiling")) if {a, b} <= set(servers)
    ]
    for a, b in ratios:
        head += f" {a + '/' + b:>13}"
    lines = [head]
    for c in clients:
        row = f"{c:>8}"
        for s in servers:
            p = by.get((s, c))
            if p is None:
                row += f" {'-':>14} {'-':>13} {'-':>13}"
            else:
                row += f" {p.rps:>14.1f} {p.p50_s * 1e3:>13.2f} {p.p99_s * 1e3:>13.2f}"
        for a, b in ratios:
            pa, pb = by.get((a, c)), by.get((b, c))
            row += f" {pa.rps / pb.rps:>13.2f}" if pa and pb and pb.rps else f" {'-':>13}"
        lines.append(row)
    return "\n".join(lines)


def cmd_compare(a: argparse.Namespace) -> int:
    from bench.cli import spec_from_args
    from bench.servers import ServerError, etcd_available, make_server, petra_available

    wanted = [s for s in a.servers.split(",") if s]
    unknown = set(wanted) - {"petra", "etcd", "ceiling"}
    if unknown:
        print(f"petra-bench: unknown servers {sorted(unknown)}", file=sys.stderr)
        return 1
    if "ceiling" in wanted and a.workload not in ("put", "range"):
        print("petra-bench: the ceiling server answers only put and range", file=sys.stderr)
        return 1
    servers = []
    for s in wanted:
        if s == "etcd" and not etcd_available():
            print("petra-bench: etcd is not on PATH: skipping it", file=sys.stderr)
        elif s == "petra" and not petra_available():
            print("petra-bench: server.main is missing: skipping petra", file=sys.stderr)
        else:
            servers.append(s)
    if not servers:
        print("petra-bench: no server to compare", file=sys.stderr)
        return 1
    clients = parse_clients(a.clients_list)
    runs: dict[tuple[str, int], list[stats.Summary]] = {}
    with tempfile.TemporaryDirectory(prefix="petra-bench-") as tmp:
        procs = {s: make_server(s, Path(tmp) / s) for s in servers}
        try:
            for proc in procs.values():
                proc.launch()
            for c in clients:
                for r in range(a.repeat):
                    for s in servers if r % 2 == 0 else reversed(servers):
                        a.endpoints = procs[s].endpoint
                        a.target_leader = False
                        spec = replace(
                            spec_from_args(a, a.workload), clients=c, conns=max(a.conns, 1)
                        )
                        summary = measure(spec)
                        print(
                            f"  {s:6} clients={c:<5} run {r + 1}: {summary.rps:10.1f} req/s",
                            file=sys.stderr,
                        )
                        runs.setdefault((s, c), []).append(summary)
        except ServerError as err:
            print(f"petra-bench: {err}", file=sys.stderr)
            return 1
        finally:
            for proc in procs.values():
                proc.stop()
    points = [medians(s, c, v) for (s, c), v in runs.items()]
    if a.json:
        import json

        print(json.dumps([_point_json(p) for p in points], indent=2))
    else:
        print(f"workload {a.workload}, medians of {a.repeat} runs")
        print(format_table(points, servers, clients))
    if a.plot:
        from bench.plot import plot_compare

        plot_compare(points, servers, clients, a.plot)
    return 0


def _point_json(p: Point) -> dict[str, Any]:
    return {
        "server": p.server,
        "clients": p.clients,
        "requests_per_s": p.rps,
        "p50_s": p.p50_s,
        "p99_s": p.p99_s,
        "runs": p.runs,
    }


# ---- ceiling: bench/server_ceiling.py (a KV servicer whose Put only returns a header) ----


def cmd_ceiling(a: argparse.Namespace) -> int:
    from bench.cli import print_result, spec_from_args
    from bench.load import run_load
    from bench.servers import make_server

    with tempfile.TemporaryDirectory(prefix="petra-bench-ceiling-") as tmp:
        server = make_server("ceiling", Path(tmp))
        try:
            server.launch()
            a.endpoints = server.endpoint
            a.target_leader = False
            result = run_load(spec_from_args(a, "put"))
        finally:
            server.stop()
    print("ceiling: a do-nothing grpc.aio KV.Put server")
    print_result(result, a.json)
    if a.plot:
        from bench.plot import plot_load

        plot_load(result, a.plot)
    return 0
