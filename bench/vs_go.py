"""petra-bench against etcd's own Go benchmark tool, on one fresh etcd, in alternation.

    python -m bench.vs_go --go-benchmark /tmp/etcd-benchmark/bin/benchmark --clients 1,64,256

(build the Go tool with /work/shared/tools/build-etcd-benchmark.sh). For each client count
and repeat it runs `benchmark put` then `petra-bench put` with the same flags, and prints
requests/s, p99 and the client's CPU per request (Go: rusage of the child process; ours:
the worker processes' CPU), so the two tools' figures and costs can be compared directly.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from bench import stats
from bench.load import default_procs, run_load
from bench.servers import make_server
from bench.workloads import LoadSpec


@dataclass(frozen=True, slots=True)
class Figure:
    tool: str
    clients: int
    rps: float
    p99_s: float
    cpu_us_per_request: float


def run_go(
    binary: str, endpoint: str, clients: int, conns: int, total: int, args: list[str]
) -> Figure:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [binary, "--endpoints", endpoint, "--dial-timeout", "5s", "--conns", str(conns),
         "--clients", str(clients), "put", "--total", str(total), *args],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99% in ([\d.]+) secs", out)
    return Figure("go", clients, rps, float(p99.group(1)) if p99 else 0.0, 1e6 * cpu_s / total)


def run_ours(spec: LoadSpec) -> Figure:
    spec = replace(spec, procs=default_procs(spec))
    result = run_load(spec, show_progress=False)
    s = result.summaries["put"]
    return Figure(
        "petra-bench", spec.clients, s.rps, s.percentiles_s.get(99.0, 0.0),
        1e6 * result.cpu_s / max(1, s.count),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--go-benchmark", default="/tmp/etcd-benchmark/bin/benchmark")
    p.add_argument("--clients", default="1,64,256")
    p.add_argument("--conns-max", type=int, default=8)
    p.add_argument("--total", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--key-size", type=int, default=8)
    p.add_argument("--val-size", type=int, default=256)
    p.add_argument("--key-space-size", type=int, default=100000)
    a = p.parse_args(argv)
    flags = ["--key-size", str(a.key_size), "--val-size", str(a.val_size),
             "--key-space-size", str(a.key_space_size)]  # fmt: skip
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="petra-bench-vs-go-") as tmp:
        etcd = make_server("etcd", Path(tmp))
        try:
            etcd.launch()
            for c in [int(x) for x in a.clients.split(",")]:
                conns = min(c, a.conns_max)
                total = a.total if c > 1 else max(1, a.total // 5)
                spec = LoadSpec("put", (etcd.endpoint,), conns=conns, clients=c, total=total,
                                key_size=a.key_size, val_size=a.val_size,
                                key_space_size=a.key_space_size)  # fmt: skip
                for _ in range(a.repeat):
                    for f in (run_go(a.go_benchmark, etcd.endpoint, c, conns, total, flags),
                              run_ours(spec)):  # fmt: skip
                        figures.append(f)
                        print(f"  {f.tool:12} clients={c:<4} {f.rps:9.1f} req/s", file=sys.stderr)
        finally:
            etcd.stop()
    print(f"{'clients':>8} {'tool':>12} {'req/s':>10} {'p99 ms':>8} {'client CPU µs/req':>18}")
    for c in sorted({f.clients for f in figures}):
        for tool in ("go", "petra-bench"):
            fs = [f for f in figures if f.clients == c and f.tool == tool]
            print(
                f"{c:>8} {tool:>12} {stats.median([f.rps for f in fs]):>10.1f} "
                f"{stats.median([f.p99_s for f in fs]) * 1e3:>8.2f} "
                f"{stats.median([f.cpu_us_per_request for f in fs]):>18.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
