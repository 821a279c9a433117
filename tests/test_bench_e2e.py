"""petra-bench end to end against real servers: each load workload, the CLI's JSON and plot,
compare, ceiling and crash mode, against a real etcd (and against petra when this checkout
has its node, server/main.py).

Each load test checks the figures against the server's own account (the revision grew by
exactly the number of writes reported), so a tool that miscounts fails.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench import cli
from bench.crash import CrashConfig, run_crash
from bench.load import LoadError, expected_events, run_load
from bench.servers import ServerProcess, free_port, make_server
from bench.verify import verify
from bench.workloads import LoadSpec
from client import Client


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = make_server("etcd", tmp_path_factory.mktemp("etcd"))
    try:
        server.launch()
        yield server
    finally:
        server.stop()


def revision(endpoint: str) -> int:
    with Client(endpoint) as c:
        return int(c.get(b"petra-bench/rev").header.revision)


def spec(server: ServerProcess, workload: str, **kw: object) -> LoadSpec:
    base = LoadSpec(workload, (server.endpoint,), procs=2, clients=4, conns=2, total=200)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_put_load_counts_match_the_server(etcd: ServerProcess) -> None:
    """400 puts from 8 clients in 2 processes: 400 successes, and etcd's revision grew by
    exactly 400; the report's figures are consistent with each other."""
    before = revision(etcd.endpoint)
    result = run_load(spec(etcd, "put", total=400, clients=8, key_space_size=100))
    s = result.summaries["put"]
    assert s.count == 400 and s.errors == 0
    assert revision(etcd.endpoint) - before == 400
    assert 0 < s.fastest_s <= s.percentiles_s[50.0] <= s.slowest_s < s.total_s
    assert s.rps == pytest.approx(400 / s.total_s)
    assert result.cpu_s > 0 and result.wall_s > 0


def test_txn_put_via_cli_json_and_plot(
    etcd: ServerProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The CLI's --json output for 60 txns of 3 puts, one revision per txn; --plot writes a
    PNG."""
    before = revision(etcd.endpoint)
    png = tmp_path / "txn.png"
    argv = ["txn-put", "--endpoints", etcd.endpoint, "--total", "60", "--txn-ops", "3",
            "--key-space-size", "10", "--clients", "3", "--procs", "1", "--json",
            "--plot", str(png)]  # fmt: skip
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["series"]["txn-put"]["count"] == 60
    assert out["series"]["txn-put"]["errors"] == 0
    assert set(out["series"]["txn-put"]["percentiles_s"]) >= {"p50", "p90"}
    assert revision(etcd.endpoint) - before == 60
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_txn_mixed_reads_do_not_write(etcd: ServerProcess) -> None:
    """txn-mixed: reads + writes = total, and the revision grew by the writes only."""
    before = revision(etcd.endpoint)
    result = run_load(spec(etcd, "txn-mixed", total=200, rw_ratio=1.0, range_key=b"\x00",
                           range_end=b"\xff", range_limit=5))  # fmt: skip
    reads, writes = result.summaries["read"].count, result.summaries["write"].count
    assert reads + writes == 200 and reads > 0 and writes > 0
    assert revision(etcd.endpoint) - before == writes


def test_serializable_range_and_lease_keepalive(etcd: ServerProcess) -> None:
    result = run_load(spec(etcd, "range", serializable=True))
    assert result.summaries["range"].count == 200
    result = run_load(spec(etcd, "lease-keepalive", total=100))
    assert result.summaries["keepalive"].count == 100
    result = run_load(spec(etcd, "lease-keepalive", total=100, keepalive_stream=True))
    assert result.summaries["keepalive"].count == 100


def test_watch_delivers_every_event(etcd: ServerProcess) -> None:
    """4 streams x 5 watchers over 3 keys, 60 puts: each watcher receives each put to its
    key; events/s and put->event latencies are reported."""
    s = spec(etcd, "watch", streams=4, watchers_per_stream=5, watched_key_total=3,
             put_total=60, key_size=32, key_space_size=1000, sequential_keys=True)  # fmt: skip
    result = run_load(s)
    assert result.summaries["watch-create"].count == 20
    assert result.summaries["put"].count == 60
    assert result.summaries["events"].count == expected_events(s) == 400
    assert result.summaries["events"].errors == 0
    lat = run_load(replace(s, workload="watch-latency", watched_key_total=1, put_rate=200))
    assert lat.summaries["events"].count == 20 * 60


def test_unreachable_endpoint_fails_clearly() -> None:
    s = LoadSpec("put", (f"127.0.0.1:{free_port()}",), procs=1, connect_timeout_s=0.5)
    with pytest.raises(LoadError, match="worker failed: LoadError: cannot connect to 127.0.0.1:"):
        run_load(s)


def test_compare_and_ceiling(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """compare starts its own servers (petra, etcd and the ceiling), prints the medians table
    and a plot; ceiling measures the do-nothing server."""
    servers = "petra,etcd,ceiling"
    png = tmp_path / "cmp.png"
    argv = ["compare", "--servers", servers, "--clients-list", "1,4", "--repeat", "1",
            "--total", "100", "--plot", str(png)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "4"]
    # req/s, p50, p99 per server (+ the petra/etcd ratio): every server measured at every point
    n = len(servers.split(","))
    assert all(len(r) >= 1 + 3 * n and all(float(r[1 + 3 * i]) > 0 for i in range(n)) for r in rows)
    assert png.stat().st_size > 100
    assert cli.main(["ceiling", "--total", "300", "--clients", "4"]) == 0
    out = capsys.readouterr().out
    assert "ceiling" in out and "Requests/sec" in out


def crash_run(server: ServerProcess, seed: int) -> None:
    cfg = CrashConfig(cycles=2, writers=4, keys=20, kill_after_min_s=0.2, kill_after_max_s=0.5,
                      seed=seed)  # fmt: skip
    history = asyncio.run(run_crash(server, cfg))
    v = verify(history)
    assert v.ok, f"seed {seed}\n{v.summary()}"
    assert v.acknowledged > 50 and v.verified == v.acknowledged and v.lost == 0
    assert len(history.recoveries) == 2
    assert all(r.recovery_s > 0 for r in history.recoveries)
    # etcd has Watch; a petra built without its Watch service is judged on the data alone.
    assert history.watch_supported or server.kind == "petra"
    if history.watch_supported:
        assert v.watch_checked and v.watch_events >= v.acknowledged
        assert history.watch_resumes >= 2  # one new stream after each restart at least


def test_crash_mode_against_etcd(tmp_path: Path) -> None:
    """Two kill -9 cycles under 4 writers: nothing acknowledged is lost, the watcher saw
    every event once, and recovery times are recorded."""
    crash_run(make_server("etcd", tmp_path), seed=11)


def test_crash_cli_with_a_server_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The `crash -- <command>` form with placeholders, as a user would type it, on etcd."""
    argv = ["crash", "--cycles", "1", "--writers", "2", "--kill-after-min", "0.1",
            "--kill-after-max", "0.2", "--seed", "3", "--json", "--data-dir", str(tmp_path),
            "--", "etcd", "--name", "{name}", "--data-dir", "{data_dir}",
            "--listen-client-urls", "{client_url}", "--advertise-client-urls", "{client_url}",
            "--listen-peer-urls", "{peer_url}", "--initial-advertise-peer-urls", "{peer_url}",
            "--initial-cluster", "{name}={peer_url}"]  # fmt: skip
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["lost"] == 0 and out["acknowledged"] > 0
    assert len(out["recovery_s"]) == 1


def test_put_load_against_petra(tmp_path: Path) -> None:
    server = make_server("petra", tmp_path)
    try:
        server.launch()
        before = revision(server.endpoint)
        result = run_load(spec(server, "put", total=200))
        assert result.summaries["put"].count == 200
        assert revision(server.endpoint) - before == 200
    finally:
        server.stop()


def test_crash_mode_against_petra(tmp_path: Path) -> None:
    crash_run(make_server("petra", tmp_path), seed=11)


def test_rate_and_duration_bound_the_run(etcd: ServerProcess) -> None:
    """--rate spaces request starts (60 puts at 300/s cannot finish in under 59/300 s), and
    --duration stops issuing at the deadline."""
    result = run_load(spec(etcd, "put", total=60, rate=300.0, procs=1))
    s = result.summaries["put"]
    assert s.count == 60 and s.total_s >= 59 / 300
    result = run_load(spec(etcd, "put", duration_s=0.5, procs=1))
    s = result.summaries["put"]
    assert s.count > 0 and 0.45 <= s.total_s < 0.5 + 5.0


def test_target_leader_skips_dead_endpoints(etcd: ServerProcess) -> None:
    """--target-leader asks each endpoint's Status; a dead one is skipped, the leader kept."""
    dead = f"127.0.0.1:{free_port()}"
    assert cli.leader_endpoint((dead, etcd.endpoint)) == etcd.endpoint


@pytest.mark.slow
def test_crash_soak_etcd(tmp_path: Path) -> None:
    """Ten kill -9 cycles with longer load between them (slow: about a minute)."""
    cfg = CrashConfig(cycles=10, writers=8, keys=50, seed=101)
    v = verify(asyncio.run(run_crash(make_server("etcd", tmp_path), cfg)))
    assert v.ok and v.lost == 0 and v.acknowledged > 1000, f"seed 101\n{v.summary()}"


@pytest.mark.slow
def test_crash_soak_petra(tmp_path: Path) -> None:
    """The same soak against petra."""
    cfg = CrashConfig(cycles=10, writers=8, keys=50, seed=101)
    v = verify(asyncio.run(run_crash(make_server("petra", tmp_path), cfg)))
    assert v.ok and v.lost == 0 and v.acknowledged > 300, f"seed 101\n{v.summary()}"


def test_crash_mode_catches_a_server_that_loses_writes(tmp_path: Path) -> None:
    """Against tests/bench_fake_etcd.py, which keeps its data in memory only, one kill -9
    must end in FAIL: acknowledged writes lost and the revision gone back."""
    server = make_server(
        "custom", tmp_path, [sys.executable, "-m", "tests.bench_fake_etcd", "{client_port}"]
    )
    cfg = CrashConfig(cycles=1, writers=4, keys=20, kill_after_min_s=0.3, kill_after_max_s=0.4,
                      seed=5)  # fmt: skip
    v = verify(asyncio.run(run_crash(server, cfg)))
    assert not v.ok, f"seed 5\n{v.summary()}"
    assert v.lost > 0 and v.verified < v.acknowledged
    assert "lost" in v.problems and "revision-went-back" in v.problems


def test_txn_mixed_cli_defaults_read_the_written_keys(
    etcd: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no KEY/END, txn-mixed reads [\\x00, \\xff) (bounded by --limit): valid requests
    (no 'key is not provided' errors), reads and writes both reported."""
    argv = ["txn-mixed", "--endpoints", etcd.endpoint, "--total", "80", "--clients", "4",
            "--procs", "1", "--key-space-size", "50", "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    series = json.loads(capsys.readouterr().out)["series"]
    assert series["read"]["count"] + series["write"]["count"] == 80
    assert series["read"]["errors"] == 0


def test_launch_moves_to_new_ports_when_one_is_taken(tmp_path: Path) -> None:
    """A port taken between free_port() and the server's bind: launch() retries elsewhere."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        taken = blocker.getsockname()[1]
        server = make_server("ceiling", tmp_path)
        server.client_port = taken
        try:
            server.launch()
            assert server.alive() and server.client_port != taken
            assert revision(server.endpoint) >= 1
        finally:
            server.stop()
        assert not server.alive()


def test_text_reports_name_each_series(
    etcd: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text output: etcd's report for a single series; titled reports for the watch
    workload (creation, events, puts); and the tool's own CPU line."""
    assert cli.main(["put", "--endpoints", etcd.endpoint, "--total", "50", "--procs", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("\nSummary:\n  Total:\t") and "Latency distribution:" in out
    assert "petra-bench: 1 worker processes used" in out and "µs per request" in out
    argv = ["watch-latency", "--endpoints", etcd.endpoint, "--streams", "2",
            "--watch-per-stream", "2", "--put-total", "20", "--put-rate", "0"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for title in ("Watch creation summary:", "Watch events received summary:", "Put summary:"):
        assert out.count(title) == 1, title
