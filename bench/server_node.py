"""petra's server core against the do-nothing gRPC ceiling (and etcd), with etcd's Go benchmark.

`python -m bench.server_node [--etcd] [--aio] [--total N] [--rounds R]` starts the do-nothing
servers of bench/server_ceiling.py (grpc.aio, the issue's ceiling, and petra's own transport),
a petra node (and, with --aio, a petra node on grpc.aio, PETRA_GRPC=aio; with --etcd, etcd
3.4.23) on free loopback ports, then runs, for each, put at 1/64/256 clients and range
(linearizable, serializable) at 64 clients with etcd's `benchmark` tool (build it with
/work/shared/tools/build-etcd-benchmark.sh), in alternation for R rounds. It prints the median
requests/s and the server's CPU time per request (the machine is shared, and CPU per request is
the figure that other tenants disturb least), and petra's ratios to the ceiling and to etcd.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCHMARK = os.environ.get("ETCD_BENCHMARK", "/tmp/etcd-benchmark/bin/benchmark")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [
    ("put c=1", 1, ["put", "--val-size", "256"]),
    ("put c=64", 64, ["put", "--val-size", "256"]),
    ("put c=256", 256, ["put", "--val-size", "256"]),
    ("range l c=64", 64, ["range", "foo"]),
    ("range s c=64", 64, ["range", "foo", "--consistency", "s"]),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def member_args(name: str, data_dir: str, port: int, peer: int) -> list[str]:
    client, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
    return [
        "--name", name, "--data-dir", data_dir, "--listen-client-urls", client,
        "--advertise-client-urls", client, "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url, "--initial-cluster", f"{name}={peer_url}",
    ]  # fmt: skip


def start(kind: str, tmp: str) -> tuple[subprocess.Popen[bytes], int]:
    port, peer = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": ROOT}
    if kind == "ceiling":
        cmd = [sys.executable, "-m", "bench.server_ceiling", str(port)]
    elif kind == "wire-ceiling":
        cmd = [sys.executable, "-m", "bench.server_ceiling", str(port), "--wire"]
    elif kind.startswith("petra"):
        if kind == "petra-aio":
            env["PETRA_GRPC"] = "aio"
        data = os.path.join(tmp, kind)
        cmd = [sys.executable, "-m", "server.main", *member_args("n1", data, port, peer)]
        cmd += ["--log-level", "warn"]
    else:
        cmd = ["etcd", *member_args("n1", os.path.join(tmp, "etcd"), port, peer)]
        cmd += ["--log-level", "warn"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = subprocess.run(
            [BENCHMARK, "--endpoints", f"127.0.0.1:{port}", "put", "--total", "1"],
            capture_output=True, timeout=30,
        )  # fmt: skip
        if probe.returncode == 0 and b"Requests/sec" in probe.stdout:
            return proc, port
    proc.kill()
    raise RuntimeError(f"{kind} did not start")


def run_case(port: int, pid: int, clients: int, args: list[str], total: int) -> tuple[float, float]:
    conns = min(clients, 64)
    before = cpu_seconds(pid)
    done = subprocess.run(
        [BENCHMARK, "--endpoints", f"127.0.0.1:{port}", "--clients", str(clients),
         "--conns", str(conns), *args, "--total", str(total)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    cpu_us = (cpu_seconds(pid) - before) / total * 1e6
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    return (float(match.group(1)) if match else 0.0), cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etcd", action="store_true")
    parser.add_argument("--aio", action="store_true", help="also petra on grpc.aio")
    parser.add_argument("--total", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    opts = parser.parse_args()
    kinds = ["ceiling", "wire-ceiling", "petra"]
    kinds += (["petra-aio"] if opts.aio else []) + (["etcd"] if opts.etcd else [])
    tmp = tempfile.mkdtemp(prefix="bench-server-")
    procs = {}
    try:
        for kind in kinds:
            procs[kind] = start(kind, tmp)
        ratios = "   petra/ceiling" + ("  petra/etcd" if opts.etcd else "")
        print(f"{'case':<14}" + "".join(f"{k:>20}" for k in kinds) + ratios)
        for label, clients, args in CASES:
            total = opts.total // 5 if clients == 1 else opts.total
            runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
            for round_no in range(opts.rounds):
                order = kinds if round_no % 2 == 0 else kinds[::-1]
                for kind in order:
                    proc, port = procs[kind]
                    runs[kind].append(run_case(port, proc.pid, clients, args, total))
            row = {kind: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
                   for kind, v in runs.items()}  # fmt: skip
            cells = "".join(f"{r:>8.0f}/s {c:>6.0f}us" for r, c in row.values())
            line = f"{label:<14}{cells}   {row['petra'][0] / max(row['ceiling'][0], 1e-9):>13.2f}"
            if opts.etcd:
                line += f"  {row['petra'][0] / max(row['etcd'][0], 1e-9):>10.2f}"
            print(line, flush=True)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
