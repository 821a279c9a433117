"""The real `etcdctl snapshot save` (3.4) against a minimal Maintenance.Snapshot service that
streams `snapshot.backend.stream` the way etcd does (chunks, then the SHA-256 as the last
blob): etcdctl writes the file, and `backend.restore` accepts it (trailer checked)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent import futures

import grpc

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from engine import Store
from snapshot import backend

ETCDCTL = shutil.which("etcdctl") or ""


class SnapshotOnly(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    def Snapshot(self, request: object, context: object) -> Iterator[rpc_pb2.SnapshotResponse]:  # noqa: N802
        chunks = list(backend.stream(self.store.env, 32 * 1024))
        remaining = sum(len(c) for c in chunks)
        for chunk in chunks:
            remaining -= len(chunk)
            resp = rpc_pb2.SnapshotResponse(remaining_bytes=remaining, blob=chunk)
            resp.header.revision = self.store.revision
            yield resp


def test_etcdctl_snapshot_save_then_restore(tmp_path) -> None:
    """etcdctl saves our stream byte for byte; restore checks its SHA-256 and keeps the keys."""
    assert ETCDCTL, "etcdctl is missing: `make system-deps` installs it"
    store = Store.open(str(tmp_path / "src"))
    with store.write_batch() as b:
        for i in range(500):
            b.put(rpc_pb2.PutRequest(key=b"key/%03d" % i, value=os.urandom(100)))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(SnapshotOnly(store), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        out = tmp_path / "saved.db"
        env = dict(os.environ, ETCDCTL_API="3")
        args = [ETCDCTL, f"--endpoints=127.0.0.1:{port}", "--dial-timeout=10s"]
        args += ["snapshot", "save", str(out)]
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        server.stop(None)
    saved = out.read_bytes()
    assert saved[-32:] == hashlib.sha256(saved[:-32]).digest() and len(saved) % 512 == 32
    expected = {
        kv.key: kv.value
        for kv in store.range(rpc_pb2.RangeRequest(key=b"key/", range_end=b"key0")).kvs
    }
    store.close()
    backend.restore(str(out), str(tmp_path / "restored"))
    restored = Store.open(str(tmp_path / "restored" / "member" / "db"))
    try:
        got = restored.range(rpc_pb2.RangeRequest(key=b"key/", range_end=b"key0"))
        assert {kv.key: kv.value for kv in got.kvs} == expected and len(expected) == 500
    finally:
        restored.close()
