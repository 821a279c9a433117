"""Put throughput at few and many clients: petra variants against etcd, interleaved finely.

`python -m bench.put_latency [--clients 1,64] [--rounds 6] [--total 1500] [--baseline DIR]`
starts etcd, this checkout's petra, the same petra with inline Readies off
(PETRA_INLINE_WAITERS_MAX=-1), and optionally the petra of another checkout (`--baseline`,
e.g. a `git archive` of main), then runs short put loads against each in turn, round after
round (order reversed every other round), and prints the median requests/s and p50 latency
of each with its ratio to etcd. The machine is shared and noisy: many short alternating runs
and medians compare better than a few long ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.servers import ETCD_STYLE_TEMPLATE, make_server
from bench.workloads import LoadSpec


def petra_cmd(root: str | None, env: list[str]) -> list[str]:
    # -P: do not put the working directory first on sys.path, so PYTHONPATH picks the tree.
    prefix = ["env", *env, *([f"PYTHONPATH={root}"] if root else [])]
    return [*prefix, sys.executable, "-P", "-m", "server.main", *ETCD_STYLE_TEMPLATE]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--total", type=int, default=1500)
    parser.add_argument("--val-size", type=int, default=256)
    parser.add_argument("--baseline", help="another petra checkout to measure too")
    parser.add_argument("--no-thread-variant", action="store_true")
    a = parser.parse_args()
    root = str(Path(__file__).resolve().parent.parent)
    variants: dict[str, list[str] | None] = {"etcd": None, "petra": petra_cmd(root, [])}
    if not a.no_thread_variant:
        variants["petra-thread"] = petra_cmd(root, ["PETRA_INLINE_WAITERS_MAX=-1"])
    if a.baseline:
        variants["petra-base"] = petra_cmd(a.baseline, [])
    clients = [int(c) for c in a.clients.split(",")]
    rps: dict[tuple[str, int], list[float]] = {}
    p50: dict[tuple[str, int], list[float]] = {}
    from bench.compare import measure

    with tempfile.TemporaryDirectory(prefix="petra-put-latency-") as tmp:
        procs = {
            name: make_server("etcd", Path(tmp) / name)
            if cmd is None
            else make_server("custom", Path(tmp) / name, cmd)
            for name, cmd in variants.items()
        }
        try:
            for proc in procs.values():
                proc.launch()
            for r in range(a.rounds):
                order = list(procs) if r % 2 == 0 else list(reversed(procs))
                for c in clients:
                    for name in order:
                        spec = LoadSpec(
                            workload="put",
                            endpoints=(procs[name].endpoint,),
                            conns=min(c, 16),
                            clients=c,
                            total=a.total * (4 if c > 1 else 1),
                            val_size=a.val_size,
                            seed=r,
                        )
                        s = measure(replace(spec))
                        rps.setdefault((name, c), []).append(s.rps)
                        p50.setdefault((name, c), []).append(s.percentiles_s.get(50.0, 0.0))
                        print(f"  round {r + 1} c={c:<4} {name:13} {s.rps:8.1f}/s", file=sys.stderr)
        finally:
            for proc in procs.values():
                proc.stop()
    print(f"put, val {a.val_size} B, medians of {a.rounds} alternating rounds")
    print(f"{'clients':>7} {'server':13} {'req/s':>9} {'p50 ms':>8} {'x etcd':>7}")
    for c in clients:
        etcd_rps = statistics.median(rps[("etcd", c)])
        for name in procs:
            m = statistics.median(rps[(name, c)])
            lat = statistics.median(p50[(name, c)]) * 1e3
            print(f"{c:>7} {name:13} {m:9.1f} {lat:8.2f} {m / etcd_rps:7.2f}")


if __name__ == "__main__":
    main()
