"""The MVCC store over LMDB.

Theory of operation
-------------------
Five named LMDB databases in one environment (layout in engine/keys.py):
- `log`:   etcd revision key (main, sub[, 't']) -> create, version, lease, key, value. Every change
           ever made (until compaction), in revision order: watch replay and HashKV scan it.
- `idx`:   ikey(user key) + inverted main -> sub, create, version (0 = tombstone), lease. A key's
           history, newest first; reads at any revision are a seek per key. Values live only in
           the log, so the index stays small.
- `meta`:  current revision, consistent index, compaction state.
- `lease`: lease ID -> TTL.  `lkeys`: lease ID + ikey -> user key (the lease's attachments).
Nothing is held in memory but a few counters read from `meta`, so opening is constant time.

One thread (the caller of `write_batch`) writes; a batch is one LMDB write transaction that also
records the consistent index. The environment runs without LMDB's own fsync (MDB_NOSYNC); a
synced batch calls `env.sync(True)` after its commit, and `sync()` does the same for batches
committed with `sync=False` (the server's WAL is then the durability point).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lmdb

from api.etcdserverpb import rpc_pb2
from engine import compaction, errors, hashkv, keys, reader
from engine.batch import WriteBatch
from engine.watch import WatchHub

MAP_SIZE_BYTES_DEFAULT = 64 << 30
QUOTA_BYTES_DEFAULT = 2 << 30  # etcd's default quota-backend-bytes
KV_OVERHEAD_BYTES = 256
LEASE_OVERHEAD_BYTES = 64

_U64_UNPACK = keys._U64.unpack
_IDX_UNPACK = keys.IDX_VALUE.unpack_from
_REV_PACK = keys._REV.pack

META_REV = b"rev"
META_CI = b"consistent_index"
META_COMPACT = b"compact_rev"  # the scheduled (and, for reads, effective) compaction revision
META_COMPACT_FINISHED = b"compact_finished_rev"
META_COMPACT_CURSOR = b"compact_cursor"  # log key after which pending compaction resumes
META_COMPACT_FROM = b"compact_from_rev"  # the previous compaction: history below it is done


class Store:
    def __init__(self, path: str, env: Any, quota_bytes: int, map_size_bytes: int) -> None:
        self.path = path
        self.env = env
        self.quota_bytes = quota_bytes
        self.map_size_bytes = map_size_bytes
        self._open_dbs()
        with env.begin() as txn:
            self.revision = self._meta_int(txn, META_REV, 1)
            self.consistent_index = self._meta_int(txn, META_CI, 0)
            self.compact_revision = self._meta_int(txn, META_COMPACT, 0)
        self.watch_hub = WatchHub(self)
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str,
        *,
        map_size_bytes: int = MAP_SIZE_BYTES_DEFAULT,
        quota_bytes: int = 0,
    ) -> Store:
        """Open (or create) the store in directory `path`. quota_bytes: 0 means etcd's default
        (2 GiB), a negative value disables the quota."""
        os.makedirs(path, exist_ok=True)
        if quota_bytes == 0:
            quota_bytes = QUOTA_BYTES_DEFAULT
        return cls(path, _open_env(path, map_size_bytes), quota_bytes, map_size_bytes)

    def _open_dbs(self) -> None:
        e = self.env
        self.dbs = reader.Dbs(
            meta=e.open_db(b"meta"),
            idx=e.open_db(b"idx"),
            log=e.open_db(b"log"),
            lease=e.open_db(b"lease"),
            lkeys=e.open_db(b"lkeys"),
        )

    def _meta_int(self, txn: Any, name: bytes, default: int) -> int:
        v = txn.get(name, db=self.dbs.meta)
        return default if v is None else keys.read_u64(v)

    # ---- writes -------------------------------------------------------------------------
    @contextmanager
    def write_batch(self, sync: bool = True) -> Iterator[WriteBatch]:
        """One LMDB write transaction. Commits on a normal exit (then fsyncs if `sync`) and
        publishes the batch's events; aborts everything if the block raises."""
        assert not self._closed
        batch = WriteBatch(self)
        try:
            yield batch
        except BaseException:
            batch.abort()
            raise
        batch.commit()
        if sync:
            self.env.sync(True)
        self.revision = batch.rev
        self.consistent_index = batch.consistent_index
        self.compact_revision = batch.compact_rev
        self.watch_hub.publish(batch.events, batch.rev)

    def sync(self) -> None:
        """Make every committed batch durable."""
        self.env.sync(True)

    def compaction_step(self, batch_records_max: int = compaction.BATCH_RECORDS_MAX) -> bool:
        """One bounded batch of pending compaction in its own write transaction (writer thread
        only). True if more remains."""
        with self.env.begin(write=True, db=self.dbs.meta) as txn:
            more = compaction.step(txn, self.dbs, batch_records_max)
        return more

    def compaction_pending(self) -> bool:
        with self.env.begin() as txn:
            return compaction.pending(txn, self.dbs)

    # ---- reads --------------------------------------------------------------------------
    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        key = req.key
        if (
            not req.range_end
            and req.revision <= 0
            and 0 < len(key) <= keys.SHORT_KEY_BYTES_MAX
            and not (req.min_mod_revision or req.max_mod_revision)
            and not (req.min_create_revision or req.max_create_revision)
        ):
            return self._get_latest(key, req.keys_only, req.count_only)
        with self.env.begin() as txn:
            current = self._meta_int(txn, META_REV, 1)
            compacted = self._meta_int(txn, META_COMPACT, 0)
            return reader.do_range(txn, self.dbs, req, current, compacted, current)

    def _get_latest(self, key: bytes, keys_only: bool, count_only: bool) -> rpc_pb2.RangeResponse:
        """range() of one short key at the current revision: the read hot path."""
        ik = key.replace(b"\x00", b"\x00\xff") + b"\x00\x00"
        resp = rpc_pb2.RangeResponse()
        dbs = self.dbs
        with self.env.begin() as txn:
            resp.header.revision = _U64_UNPACK(txn.get(META_REV, b"\0\0\0\0\0\0\0\1", db=dbs.meta))[
                0
            ]
            cur = txn.cursor(db=dbs.idx)
            if not cur.set_range(ik):
                return resp
            comp = cur.key()
            if comp[:-8] != ik:
                return resp
            sub, create, version, lease = _IDX_UNPACK(cur.value())
            if not version:
                return resp
            resp.count = 1
            if count_only:
                return resp
            main = keys.MAIN_MAX - _U64_UNPACK(comp[-8:])[0]
            kv = resp.kvs.add()
            kv.key = key
            kv.create_revision = create
            kv.mod_revision = main
            kv.version = version
            if lease:
                kv.lease = lease
            if not keys_only:
                rec = txn.get(_REV_PACK(main, b"_", sub), db=dbs.log)
                kv.value = rec[keys.LOG_VALUE.size + len(key) :]
        return resp

    def lease_ttl_info(self, lease_id: int) -> tuple[int, list[bytes]]:
        """(granted TTL, attached keys in key order). LeaseNotFoundError if unknown."""
        with self.env.begin() as txn:
            v = txn.get(keys.u64(lease_id & keys.MAIN_MAX), db=self.dbs.lease)
            if v is None:
                raise errors.LeaseNotFoundError()
            return keys.read_u64(v), reader.lease_keys(txn, self.dbs, lease_id)

    def leases(self) -> list[tuple[int, int]]:
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.dbs.lease)
            return [(_signed(keys.read_u64(k)), keys.read_u64(v)) for k, v in cur]

    def hash(self) -> int:
        """A CRC-32C of the whole key history (etcd hashes its bbolt file, which no other
        implementation can reproduce; HashKV at the current revision serves the same purpose)."""
        return self.hash_kv(0)[0]

    def hash_kv(self, revision: int) -> tuple[int, int, int]:
        """(hash, compact_revision, current revision) exactly as etcd computes HashKV; the
        compact_revision is -1 when the store was never compacted, as in etcd."""
        with self.env.begin() as txn:
            current = self._meta_int(txn, META_REV, 1)
            compacted = self._meta_int(txn, META_COMPACT, 0)
            return hashkv.hash_kv(txn, self.dbs, revision, current, compacted)

    def size_bytes(self) -> int:
        """Bytes of the database up to its highest used page (bbolt's Size())."""
        info = self.env.info()
        return int((info["last_pgno"] + 1) * self.env.stat()["psize"])

    def size_in_use_bytes(self) -> int:
        """Bytes of the pages that hold data (free pages excluded)."""
        pages = 2  # the two meta pages
        with self.env.begin() as txn:
            for st in [self.env.stat()] + [txn.stat(db) for db in self.dbs]:
                pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return int(pages * self.env.stat()["psize"])

    def check_quota(self, req: Any) -> None:
        """NoSpaceError if applying `req` (Put, Txn or LeaseGrant request) could exceed the
        quota: etcd's rule, size + cost must stay below quota. The server calls this before
        proposing; the apply path never checks it (replicas must apply identically)."""
        if self.quota_bytes < 0:
            return
        if self.size_bytes() + request_cost(req) >= self.quota_bytes:
            raise errors.NoSpaceError()

    def defragment(self) -> None:
        """Compacting copy of the environment, then swap it in. Writer thread only; no read may
        be in flight (the server pauses requests, as etcd does)."""
        tmp = os.path.join(self.path, "defrag.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        self.env.copy(tmp, compact=True)
        copied = os.path.join(tmp, "data.mdb")
        _fsync_path(copied)  # the copy must be on disk before it replaces the original
        self.env.close()
        os.replace(copied, os.path.join(self.path, "data.mdb"))
        _fsync_path(self.path)  # and the rename too: a crash leaves the old or the new file
        shutil.rmtree(tmp, ignore_errors=True)
        self.env = _open_env(self.path, self.map_size_bytes)
        self._open_dbs()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.env.sync(True)
            self.env.close()


def _open_env(path: str, map_size_bytes: int) -> Any:
    return lmdb.open(
        path,
        map_size=map_size_bytes,
        max_dbs=8,
        sync=False,
        metasync=False,
        readahead=False,
        max_readers=256,
    )


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _signed(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def request_cost(req: Any) -> int:
    """etcd's quota cost estimate of a request."""
    if isinstance(req, rpc_pb2.PutRequest):
        return KV_OVERHEAD_BYTES + req.ByteSize()
    if isinstance(req, rpc_pb2.TxnRequest):

        def branch(ops: Any) -> int:
            return sum(
                KV_OVERHEAD_BYTES + op.request_put.ByteSize()
                for op in ops
                if op.WhichOneof("request") == "request_put"
            )

        return max(branch(req.success), branch(req.failure))
    if isinstance(req, rpc_pb2.LeaseGrantRequest):
        return LEASE_OVERHEAD_BYTES
    return 0
