"""HashKV is byte-equal to the real etcd 3.4's: the same operations are applied to a real etcd
(through etcdctl, on 127.0.0.1) and to the engine, and `endpoint hashkv` must match the
engine's hash_kv at every revision, across two compactions (which exercises etcd's keep set).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from api.etcdserverpb import rpc_pb2 as pb
from engine import Store

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Etcd:
    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(parents=True)
        self.client = f"127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        self.log = open(tmp / "etcd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [ETCD, "--data-dir", str(tmp / "etcd"), "--listen-client-urls", "http://" + self.client,
             "--advertise-client-urls", "http://" + self.client, "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", "default=" + peer],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def ctl(self, *args: str, stdin: str | None = None) -> str:
        env = dict(os.environ, ETCDCTL_API="3")
        out = subprocess.run(
            [ETCDCTL, "--endpoints", self.client, "--command-timeout=5s", *args],
            input=stdin, capture_output=True, text=True, env=env, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    def wait_ready(self, deadline_s: float = 30.0) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            assert self.proc.poll() is None, "etcd exited"
            try:
                self.ctl("endpoint", "health")
                return
            except AssertionError:
                continue
        raise AssertionError("etcd did not become healthy")

    def hash_kv(self, rev: int) -> tuple[int, int]:
        out = json.loads(self.ctl("endpoint", "hashkv", f"--rev={rev}", "-w", "json"))
        return out[0]["HashKV"]["hash"], out[0]["HashKV"]["compact_revision"]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def start_etcd(tmp: Path) -> Etcd:
    """Start etcd on free ports; another process may grab a port first, so try again."""
    for attempt in range(3):
        etcd = Etcd(tmp / f"try{attempt}")
        try:
            etcd.wait_ready()
            return etcd
        except AssertionError:
            etcd.stop()
    raise AssertionError(f"etcd did not start; see {tmp}/try*/etcd.log")


def test_hash_kv_matches_real_etcd(tmp_path: Path) -> None:
    etcd = start_etcd(tmp_path)
    store = Store.open(str(tmp_path / "engine"))
    try:

        def put(k: str, v: str, lease: int = 0) -> None:
            args = ["put", k, v] + ([f"--lease={lease:x}"] if lease else [])
            etcd.ctl(*args)
            with store.write_batch() as b:
                b.put(pb.PutRequest(key=k.encode(), value=v.encode(), lease=lease))

        def delete(k: str, prefix: bool = False) -> None:
            etcd.ctl("del", k, *(["--prefix"] if prefix else []))
            with store.write_batch() as b:
                end = (k[:-1] + chr(ord(k[-1]) + 1)).encode() if prefix else b""
                b.delete_range(pb.DeleteRangeRequest(key=k.encode(), range_end=end))

        def compact(rev: int) -> None:
            etcd.ctl("compaction", "--physical", str(rev))
            with store.write_batch() as b:
                b.compact(rev)
            while store.compaction_step():
                pass

        def check() -> None:
            for rev in range(max(store.compact_revision + 1, 1), store.revision + 1):
                ours = store.hash_kv(rev)
                assert etcd.hash_kv(rev) == (ours[0], ours[1]), f"revision {rev}"

        put("a", "1")
        put("b", "2")
        put("c", "3")
        lease = int(etcd.ctl("lease", "grant", "600").split()[1], 16)
        with store.write_batch() as b:
            b.lease_grant(lease, 600)
        put("d", "4", lease)
        put("long/" + "k" * 600, "beyond LMDB's key limit")
        put("a", "5")
        delete("b")
        etcd.ctl("txn", stdin="\nput x 1\nput y 2\n\n\n")
        with store.write_batch() as b:
            b.txn(pb.TxnRequest(success=[
                pb.RequestOp(request_put=pb.PutRequest(key=b"x", value=b"1")),
                pb.RequestOp(request_put=pb.PutRequest(key=b"y", value=b"2")),
            ]))  # fmt: skip
        check()
        compact(6)
        put("c", "9")
        delete("a")
        put("a", "again")
        delete("x", prefix=True)
        check()
        compact(10)
        put("z", "last")
        check()
        delete("z")
        compact(store.revision)  # at a delete: the engine keeps that tombstone, etcd does not
        put("q", "1")
        check()
        for k in ("a", "c", "d", "long/" + "k" * 600, "q", "y"):
            delete(k)
        compact(store.revision)  # nothing alive: etcd's keep set is empty
        put("r", "1")
        delete("r")
        check()
    finally:
        etcd.stop()
        store.close()
