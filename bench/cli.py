"""petra-bench: load workloads, side-by-side comparison, and crash-recovery testing against
any etcd v3 endpoint (petra or etcd). Run `python -m bench.cli --help`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, replace
from typing import Any

from bench import stats
from bench.workloads import WORKLOADS, LoadSpec

# Series titles, as etcd's benchmark prints them.
TITLES = {
    "watch-create": "Watch creation summary:",
    "events": "Watch events received summary:",
    "put": "Put summary:",
    "read": "Read summary:",
    "write": "Write summary:",
}


def add_load_options(p: argparse.ArgumentParser, workload: str) -> None:
    """etcd benchmark's flags (same names and defaults), plus the tool's own."""
    p.add_argument("--endpoints", default="127.0.0.1:2379", help="comma-separated endpoints")
    p.add_argument("--conns", type=int, default=1, help="total gRPC connections")
    p.add_argument("--clients", type=int, default=1, help="total concurrent clients")
    p.add_argument("--total", type=int, default=10000, help="total requests")
    p.add_argument("--duration", type=float, default=0.0, help="run seconds (overrides --total)")
    p.add_argument("--rate", type=float, default=0.0, help="max requests/s (0: no limit)")
    p.add_argument("--key-size", type=int, default=32 if "watch" in workload else 8)
    p.add_argument("--val-size", type=int, default=32 if workload == "watch-latency" else 8)
    p.add_argument("--key-space-size", type=int, default=1)
    p.add_argument("--sequential-keys", action="store_true")
    p.add_argument("--target-leader", action="store_true", help="use only the leader endpoint")
    p.add_argument("--consistency", choices=("l", "s"), default="l")
    p.add_argument("--txn-ops", type=int, default=1, help="puts per txn (txn-put)")
    p.add_argument("--rw-ratio", type=float, default=1.0, help="reads per write (txn-mixed)")
    p.add_argument("--limit", type=int, default=1000 if workload == "txn-mixed" else 0,
                   help="range limit (range, txn-mixed)")  # fmt: skip
    p.add_argument("--streams", type=int, default=10, help="watch streams")
    p.add_argument(
        "--watch-per-stream",
        "--watchers-per-stream",
        dest="watch_per_stream",
        type=int,
        default=100 if workload == "watch" else 10,
    )
    p.add_argument("--watched-key-total", type=int, default=1)
    p.add_argument("--put-total", type=int, default=1000 if workload == "watch" else 10000)
    p.add_argument("--put-rate", type=float, default=0.0 if workload == "watch" else 100.0)
    p.add_argument("--keepalive-stream", action="store_true",
                   help="lease-keepalive: one long-lived stream per client")  # fmt: skip
    p.add_argument("--procs", type=int, default=0, help="worker processes (0: per core)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--plot", metavar="FILE.png", help="latency histogram + throughput chart")
    if workload in ("range", "txn-mixed"):
        # txn-mixed reads the keys it writes by default: benchmark keys are varints, so
        # [\x00, \xff) holds them all (bounded by --limit).
        p.add_argument("key", nargs="?", default=None)
        p.add_argument("end", nargs="?", default=None)


def spec_from_args(a: argparse.Namespace, workload: str) -> LoadSpec:
    from client import parse_endpoints

    endpoints = tuple(parse_endpoints(a.endpoints))
    if a.target_leader:
        endpoints = (leader_endpoint(endpoints),)
    mixed = workload == "txn-mixed"
    spec = LoadSpec(
        workload=workload,
        endpoints=endpoints,
        conns=a.conns,
        clients=a.clients,
        total=a.total,
        duration_s=a.duration,
        rate=a.rate,
        key_size=a.key_size,
        val_size=a.val_size,
        key_space_size=a.key_space_size,
        sequential_keys=a.sequential_keys,
        serializable=a.consistency == "s",
        range_key=_key_arg(getattr(a, "key", None), b"\x00" if mixed else b"foo"),
        range_end=_key_arg(getattr(a, "end", None), b"\xff" if mixed else b""),
        range_limit=a.limit,
        txn_ops=a.txn_ops,
        rw_ratio=a.rw_ratio,
        streams=a.streams,
        watchers_per_stream=a.watch_per_stream,
        watched_key_total=a.watched_key_total,
        put_total=a.put_total,
        put_rate=a.put_rate,
        keepalive_stream=a.keepalive_stream,
        seed=a.seed,
    )
    from bench.load import default_procs

    return replace(spec, procs=a.procs or default_procs(spec))


def _key_arg(text: str | None, default: bytes) -> bytes:
    return default if text is None else text.encode()


def leader_endpoint(endpoints: tuple[str, ...]) -> str:
    """The endpoint whose member is the leader (Maintenance.Status: leader == member_id)."""
    from client import Client

    for ep in endpoints:
        with Client(ep, timeout_s=3.0) as c:
            try:
                st = c.status()
            except Exception:  # noqa: BLE001 - that endpoint is down: try the next
                continue
            if st.leader == st.header.member_id:
                return ep
    raise SystemExit("petra-bench: no endpoint reports itself as the leader")


def result_json(result: Any) -> dict[str, Any]:
    spec = asdict(result.spec)
    spec["range_key"] = result.spec.range_key.decode(errors="replace")
    spec["range_end"] = result.spec.range_end.decode(errors="replace")
    spec["endpoints"] = list(result.spec.endpoints)
    done = sum(s.count + 0 for s in result.summaries.values())
    return {
        "workload": result.spec.workload,
        "spec": spec,
        "series": {k: stats.as_json(v) for k, v in result.summaries.items()},
        "tool_cpu_s": result.cpu_s,
        "tool_cpu_us_per_request": 1e6 * result.cpu_s / done if done else 0.0,
        "tool_cpu_share_max": result.cpu_share_max,
        "warnings": result.warnings,
    }


def print_result(result: Any, as_json_out: bool) -> None:
    if as_json_out:
        print(json.dumps(result_json(result), indent=2))
    else:
        for label, summary in result.summaries.items():
            title = TITLES.get(label, "") if len(result.summaries) > 1 else ""
            print(stats.format_report(summary, title))
        done = sum(s.count for s in result.summaries.values())
        per_req = f", {1e6 * result.cpu_s / done:.0f} µs per request" if done else ""
        print(
            f"petra-bench: {result.spec.procs} worker processes used {result.cpu_s:.2f} s "
            f"CPU in {result.wall_s:.2f} s{per_req}"
        )
    for w in result.warnings:
        print(w, file=sys.stderr)


def cmd_load(a: argparse.Namespace, workload: str) -> int:
    from bench.load import LoadError, run_load

    spec = spec_from_args(a, workload)
    try:
        result = run_load(spec)
    except LoadError as err:
        print(f"petra-bench: {err}", file=sys.stderr)
        return 1
    print_result(result, a.json)
    if a.plot:
        from bench.plot import plot_load

        plot_load(result, a.plot)
    return 0 if not any(s.errors for s in result.summaries.values()) else 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petra-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for w in WORKLOADS:
        add_load_options(sub.add_parser(w, help=f"the {w} load workload"), w)
    from bench import compare, crash

    compare.add_parsers(sub)
    crash.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in WORKLOADS:
        return cmd_load(args, args.command)
    return int(args.run(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
