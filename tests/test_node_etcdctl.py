"""The real etcdctl (3.4.23) against a real node: every command of the seed article and more.

Each test runs against etcd 3.4.23 (which proves the test) and against petra, through the
`node_kind` parameter. Outputs are checked exactly where etcdctl prints only data, and by
pattern where it prints IDs, sizes or timings. `test_json_transcript_matches_etcd` runs one
script of commands with `-w json` on a fresh etcd and a fresh petra and compares the outputs
with identities (cluster and member IDs, raft term, lease IDs) masked.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import signal

import pytest

from tests import nodes
from tests.nodes import LineReader, Node, etcdctl, etcdctl_popen, running

# The fixtures of tests.nodes, made visible to pytest in this module.
node_kind = nodes.node_kind
node = nodes.node
shared_node = nodes.shared_node


def out(n: Node, *args: str, input: str | None = None) -> str:
    return etcdctl(n, *args, input=input).stdout


def fails(n: Node, *args: str) -> str:
    """Run a command that must fail; return its last stderr line (etcdctl's `Error: ...`)."""
    done = etcdctl(n, *args, check=False)
    assert done.returncode != 0, f"{args} succeeded: {done.stdout}"
    return done.stderr.strip().splitlines()[-1]


def revision(n: Node) -> int:
    return int(json.loads(out(n, "get", "any-key", "-w", "json"))["header"]["revision"])


def test_seed_article_session(node: Node) -> None:
    """The seed article's put/get/del commands, in its order, with etcdctl's exact output."""
    assert out(node, "put", "myKey", "this is etcd") == "OK\n"
    assert out(node, "get", "myKey") == "myKey\nthis is etcd\n"
    for key, value in (("name1", "v1"), ("name2", "v2"), ("name11", "v11")):
        assert out(node, "put", key, value) == "OK\n"
    assert out(node, "get", "--print-value-only", "name1") == "v1\n"
    assert out(node, "get", "--prefix", "name") == "name1\nv1\nname11\nv11\nname2\nv2\n"
    assert out(node, "get", "--from-key", "name2") == "name2\nv2\n"
    everything = "myKey\nthis is etcd\nname1\nv1\nname11\nv11\nname2\nv2\n"
    assert out(node, "get", "--from-key", "") == everything
    assert out(node, "del", "name11") == "1\n"
    assert out(node, "del", "--prev-kv", "--prefix", "name") == "2\nname1\nv1\nname2\nv2\n"
    assert out(node, "del", "--prefix", "") == "1\n"
    assert out(node, "get", "--from-key", "") == ""
    assert out(node, "del", "nothing-here") == "0\n"


def test_get_options(shared_node: Node) -> None:
    """Sorting, limits, keys-only, counts, ranges and historical reads."""
    n = shared_node
    for i in range(5):
        out(n, "put", f"opt/k{i}", f"v{4 - i}")
    assert out(n, "get", "--prefix", "opt/", "--keys-only") == "".join(
        f"opt/k{i}\n\n" for i in range(5)
    )
    assert out(n, "get", "--prefix", "opt/", "--limit=2") == "opt/k0\nv4\nopt/k1\nv3\n"
    assert out(n, "get", "--prefix", "opt/", "--sort-by=VALUE", "--order=ASCEND",
               "--print-value-only") == "v0\nv1\nv2\nv3\nv4\n"  # fmt: skip
    assert out(n, "get", "--prefix", "opt/", "--order=DESCEND", "--limit=1") == "opt/k4\nv0\n"
    assert out(n, "get", "opt/k1", "opt/k3") == "opt/k1\nv3\nopt/k2\nv2\n"
    limited = json.loads(out(n, "get", "--prefix", "opt/", "--limit=1", "-w", "json"))
    assert (limited["count"], limited["more"], len(limited["kvs"])) == (5, True, 1)
    first = json.loads(out(n, "get", "opt/k0", "-w", "json"))["kvs"][0]
    out(n, "put", "opt/k0", "changed")
    assert out(n, "get", "opt/k0", f"--rev={first['mod_revision']}") == "opt/k0\nv4\n"
    assert out(n, "get", "opt/k0", "--print-value-only") == "changed\n"
    future = revision(n) + 100
    assert fails(n, "get", "opt/k0", f"--rev={future}") == (
        "Error: etcdserver: mvcc: required revision is a future revision"
    )
    assert fails(n, "get", "") == "Error: etcdserver: key is not provided"


def test_put_options(shared_node: Node) -> None:
    """put --prev-kv prints the old pair; --ignore-value keeps the value; errors are etcd's."""
    n = shared_node
    out(n, "put", "po/a", "1")
    assert out(n, "put", "po/a", "2", "--prev-kv") == "OK\npo/a\n1\n"
    assert out(n, "put", "po/a", "--ignore-value") == "OK\n"
    assert out(n, "get", "po/a", "--print-value-only") == "2\n"
    assert fails(n, "put", "po/missing", "--ignore-value") == "Error: etcdserver: key not found"
    assert out(n, "put", "po/stdin", input="from stdin") == "OK\n"
    assert out(n, "get", "po/stdin", "--print-value-only") == "from stdin\n"


TXN_SUCCESS = 'value("tx/k") = "x"\n\nput tx/a 1\nget tx/k\n\nput tx/b 2\n\n'
TXN_FAILURE = 'mod("tx/k") > "100000"\n\nput tx/a 1\n\nput tx/b 2\nget tx/b\n\n'
PROMPTS = "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"


def test_txn_interactive(shared_node: Node) -> None:
    """`txn -i` reads compares, success and failure ops from stdin; both branches."""
    n = shared_node
    out(n, "put", "tx/k", "x")
    assert out(n, "txn", "-i", input=TXN_SUCCESS) == PROMPTS + "SUCCESS\n\nOK\n\ntx/k\nx\n"
    assert out(n, "txn", "-i", input=TXN_FAILURE) == PROMPTS + "FAILURE\n\nOK\n\ntx/b\n2\n"
    assert out(n, "get", "tx/a", "tx/c", "--print-value-only") == "1\n2\n"
    nested_ok = 'version("tx/a") = "1"\ncreate("tx/b") > "0"\n\ndel tx/a\n\n\n'
    assert out(n, "txn", input=nested_ok) == "SUCCESS\n\n1\n"
    assert out(n, "txn", input='value("tx/nope") = "1"\n\n\nput tx/e 1\n\n') == "FAILURE\n\nOK\n"


def _lines_of(reader: LineReader, count: int) -> list[str]:
    return reader.until(count)[:count]


def test_watch_prefix_and_history(shared_node: Node) -> None:
    """watch --prefix sees live puts and deletes; watch --rev replays history, then goes live."""
    n = shared_node
    start = revision(n) + 1
    live = LineReader(etcdctl_popen(n, "watch", "--prefix", "wa/", f"--rev={start}"))
    try:
        out(n, "put", "wa/a", "1")
        out(n, "put", "wa/b", "2")
        out(n, "del", "wa/a")
        assert _lines_of(live, 8) == ["PUT", "wa/a", "1", "PUT", "wa/b", "2", "DELETE", "wa/a"]
    finally:
        live.close()
    replay = LineReader(etcdctl_popen(n, "watch", "wa/b", f"--rev={start}", "--prev-kv"))
    try:
        assert _lines_of(replay, 3) == ["PUT", "wa/b", "2"]
        out(n, "put", "wa/b", "3")
        # The live event carries the previous pair before the new one.
        assert replay.until(8)[3:8] == ["PUT", "wa/b", "2", "wa/b", "3"]
    finally:
        replay.close()


def test_watch_sees_prev_kv(shared_node: Node) -> None:
    """watch --prev-kv prints the previous pair before the new one."""
    n = shared_node
    out(n, "put", "wp/k", "old")
    reader = LineReader(etcdctl_popen(n, "watch", "wp/k", "--prev-kv", f"--rev={revision(n) + 1}"))
    try:
        out(n, "put", "wp/k", "new")
        assert _lines_of(reader, 5) == ["PUT", "wp/k", "old", "wp/k", "new"]
    finally:
        reader.close()


LEASE_ID = re.compile(r"^lease ([0-9a-f]+) granted with TTL\(60s\)$")


def test_lease_lifecycle(shared_node: Node) -> None:
    """grant, put --lease, keep-alive --once, timetolive --keys, list, revoke deletes the key."""
    n = shared_node
    match = LEASE_ID.match(out(n, "lease", "grant", "60").strip())
    assert match, "grant output"
    lease = match.group(1)
    assert out(n, "put", "ls/k", "v", f"--lease={lease}") == "OK\n"
    assert out(n, "lease", "keep-alive", "--once", lease) == (
        f"lease {lease} keepalived with TTL(60)\n"
    )
    ttl = out(n, "lease", "timetolive", "--keys", lease).strip()
    granted = rf"lease {lease} granted with TTL\(60s\)"
    assert re.fullmatch(rf"{granted}, remaining\((5[0-9]|60)s\), attached keys\(\[ls/k\]\)", ttl), (
        ttl
    )
    assert lease in out(n, "lease", "list").split()
    assert out(n, "lease", "revoke", lease) == f"lease {lease} revoked\n"
    assert out(n, "get", "ls/k") == ""
    assert out(n, "lease", "timetolive", lease) == f"lease {lease} already expired\n"
    assert fails(n, "lease", "revoke", lease) == (
        "Error: failed to revoke lease (etcdserver: requested lease not found)"
    )
    assert fails(n, "put", "ls/k", "v", f"--lease={lease}") == (
        "Error: etcdserver: requested lease not found"
    )


def test_lock_excludes_second_holder(shared_node: Node) -> None:
    """A second `lock` waits while the first holds it and runs its command once it is freed."""
    n = shared_node
    holder = LineReader(etcdctl_popen(n, "lock", "lk/m"))
    waiter = None
    try:
        key = holder.until(1)[0]
        assert re.fullmatch(r"lk/m/[0-9a-f]+", key), key
        waiter = LineReader(etcdctl_popen(n, "lock", "lk/m", "echo", "acquired"))
        # The waiter has queued once its own key exists under the lock prefix.
        _wait_keys(n, "lk/m/", 2)
        assert waiter.lines == [] and waiter.proc.poll() is None
        holder.proc.send_signal(signal.SIGINT)  # etcdctl closes its session: lease revoked
        assert waiter.until(1) == ["acquired"]
        assert waiter.proc.wait(15) == 0
    finally:
        holder.close()
        if waiter:
            waiter.close()


def _wait_keys(n: Node, prefix: str, count: int) -> None:
    from tests.nodes import wait_for

    def enough() -> bool:
        got = json.loads(out(n, "get", "--prefix", prefix, "--keys-only", "-w", "json"))
        return int(got.get("count", 0)) >= count

    wait_for(enough, 15, f"{count} keys under {prefix}")


def test_lock_runs_command_with_lock_key(shared_node: Node) -> None:
    """`lock name cmd` runs cmd holding the lock, with ETCD_LOCK_KEY in its environment."""
    done = out(shared_node, "lock", "lk/cmd", "--", "sh", "-c", "echo $ETCD_LOCK_KEY")
    assert re.fullmatch(r"lk/cmd/[0-9a-f]+\n", done), done


def test_elect_and_observe(shared_node: Node) -> None:
    """A candidate becomes leader with its proposal; `elect -l` observes it."""
    n = shared_node
    leader = LineReader(etcdctl_popen(n, "elect", "el/e", "p1"))
    observer = None
    try:
        key, value = leader.until(2)[:2]
        assert re.fullmatch(r"el/e/[0-9a-f]+", key) and value == "p1", leader.lines
        observer = LineReader(etcdctl_popen(n, "elect", "-l", "el/e"))
        assert observer.until(2)[:2] == [key, "p1"]
    finally:
        leader.close()
        if observer:
            observer.close()


def test_compaction_and_defrag(node: Node) -> None:
    """compaction N prints etcd's line; reads below N fail with etcd's error; defrag works."""
    for i in range(5):
        out(node, "put", "c/k", str(i))
    assert out(node, "compaction", "4") == "compacted revision 4\n"
    compacted = "Error: etcdserver: mvcc: required revision has been compacted"
    assert fails(node, "get", "c/k", "--rev=3") == compacted
    assert fails(node, "compaction", "3") == compacted
    assert fails(node, "compaction", "100") == (
        "Error: etcdserver: mvcc: required revision is a future revision"
    )
    assert out(node, "get", "c/k", "--rev=4", "--print-value-only") == "2\n"
    assert out(node, "compaction", "--physical", "5") == "compacted revision 5\n"
    assert out(node, "defrag") == f"Finished defragmenting etcd member[{node.endpoint}]\n"
    assert out(node, "get", "c/k", "--print-value-only") == "4\n"


def test_endpoint_status_health_member_alarm(node: Node) -> None:
    """endpoint status/health, member list and alarm list print etcd's formats."""
    status = out(node, "endpoint", "status").strip()
    assert re.fullmatch(
        rf"{node.endpoint}, [0-9a-f]+, 3\.4\.23, \d+(\.\d+)? [kMG]?B, true, false, \d+, \d+, \d+,",
        status,
    ), status
    member_id = status.split(", ")[1]
    health = etcdctl(node, "endpoint", "health")
    assert re.fullmatch(
        rf"{node.endpoint} is healthy: successfully committed proposal: took = \S+\n",
        health.stderr,
    ), health.stderr
    assert out(node, "member", "list") == (
        f"{member_id}, started, {node.name}, http://127.0.0.1:{node.peer_port}, {node.url}, false\n"
    )
    assert out(node, "alarm", "list") == ""
    parsed = json.loads(out(node, "endpoint", "status", "-w", "json"))[0]["Status"]
    assert parsed["version"] == "3.4.23"
    assert parsed["leader"] == parsed["header"]["member_id"]
    assert parsed["raftAppliedIndex"] <= parsed["raftIndex"]


def test_snapshot_save(node: Node, tmp_path: pathlib.Path) -> None:
    """snapshot save streams the backend into a file, with etcd's closing SHA-256 trailer."""
    out(node, "put", "s/k", "v")
    path = tmp_path / "backup.db"
    assert out(node, "snapshot", "save", str(path)) == f"Snapshot saved at {path}\n"
    data = path.read_bytes()
    assert len(data) > 32
    assert hashlib.sha256(data[:-32]).digest() == data[-32:], "no SHA-256 trailer"
    assert not (tmp_path / "backup.db.part").exists()


@pytest.mark.slow
def test_check_perf_small_load(node: Node) -> None:
    """check perf --load=s (60 s of load from 50 clients) completes and the node sustains the
    throughput it asks for. Its latency verdicts (slowest request < 0.5 s, stddev) depend on
    the machine's load, so they are printed but not required: etcd itself fails the slowest
    request check on this shared 2-core machine."""
    done = etcdctl(node, "check", "perf", "--load=s", timeout_s=180, check=False)
    output = done.stdout + done.stderr
    assert "PASS: Throughput" in output, output[-2000:]
    assert "Slowest request took" in output and "Stddev is" in output, output[-2000:]


# --- petra's output against etcd's -----------------------------------------------------------

TRANSCRIPT: list[tuple[tuple[str, ...], str | None]] = [
    (("put", "t/a", "1", "-w", "json"), None),
    (("put", "t/b", "2", "-w", "json"), None),
    (("put", "t/a", "3", "--prev-kv", "-w", "json"), None),
    (("get", "t/", "--prefix", "-w", "json"), None),
    (("get", "t/a", "--rev=2", "-w", "json"), None),
    (("get", "t/", "--prefix", "--limit=1", "--order=DESCEND", "-w", "json"), None),
    (("get", "t/", "--prefix", "--keys-only", "-w", "json"), None),
    (("txn", "-w", "json"), 'value("t/a") = "3"\n\nput t/c 4\nget t/b\n\ndel t/a\n\n'),
    (("txn", "-w", "json"), 'version("t/a") > "5"\n\nput t/c 4\n\ndel t/a --prev-kv\n\n'),
    (("del", "t/", "--prefix", "--prev-kv", "-w", "json"), None),
    (("get", "t/a", "--rev=3", "-w", "json"), None),
    (("compaction", "3"), None),
    (("get", "t/a", "--rev=2", "-w", "json"), None),
    (("get", "", "-w", "json"), None),
    (("lease", "grant", "100", "-w", "json"), None),
    (("alarm", "list", "-w", "json"), None),
    (("del", "never", "-w", "json"), None),
    (("put", "f/a", "1", "-w", "fields"), None),
    (("put", "f/a", "2", "--prev-kv", "-w", "fields"), None),
    (("get", "f/", "--prefix", "-w", "fields"), None),
    (("txn", "-w", "fields"), 'value("f/a") = "2"\n\nget f/a\n\n\n'),
    (("del", "f/a", "-w", "fields"), None),
    (("lease", "grant", "100", "-w", "fields"), None),
    (("get", "f/a", "--rev=99", "-w", "fields"), None),
    (("get", "t/", "--prefix", "--consistency=s", "-w", "json"), None),
    (("endpoint", "hashkv", "-w", "json"), None),
    (("alarm", "disarm", "-w", "json"), None),
    (("lease", "list", "-w", "json"), None),
]
IDENTITY_FIELDS = ("cluster_id", "member_id", "raft_term", "ID", "id", "leader")


FIELDS_IDENTITY = ("ClusterID", "MemberID", "RaftTerm", "ID")


def _mask(text: str) -> str:
    for field in IDENTITY_FIELDS:
        text = re.sub(rf'"{field}":\d+', f'"{field}":"*"', text)
    for field in FIELDS_IDENTITY:
        text = re.sub(rf'"{field}" : \d+', f'"{field}" : *', text)
    text = re.sub(r'"Endpoint":"127\.0\.0\.1:\d+"', '"Endpoint":"*"', text)
    return re.sub(r"lease [0-9a-f]+", "lease *", text)


def _transcript(n: Node) -> list[str]:
    results = []
    for args, stdin in TRANSCRIPT:
        done = etcdctl(n, *args, input=stdin, check=False)
        last_err = done.stderr.strip().splitlines()[-1:] if done.returncode else []
        results.append(f"{' '.join(args)} -> rc={done.returncode} {_mask(done.stdout)} {last_err}")
    return results


def test_json_transcript_matches_etcd(tmp_path: pathlib.Path) -> None:
    """The same script of etcdctl -w json commands prints the same on petra as on etcd."""
    with running("etcd", tmp_path / "etcd") as etcd:
        expected = _transcript(etcd)
    with running("petra", tmp_path / "petra") as petra:
        got = _transcript(petra)
    for want, have in zip(expected, got, strict=True):
        assert have == want
