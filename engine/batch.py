"""A write batch: one LMDB write transaction applying Put, DeleteRange, Txn, Compact and lease
operations in order, each write transaction at its own main revision.

Every operation validates everything it depends on before its first write, so an operation that
fails raises and leaves the batch as it was (LMDB nested transactions are not used).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from api.etcdserverpb import rpc_pb2
from api.mvccpb import kv_pb2
from engine import compaction, errors, keys, reader, validate

if TYPE_CHECKING:
    from engine.store import Store

_IDX_PACK = keys.IDX_VALUE.pack
_IDX_UNPACK = keys.IDX_VALUE.unpack_from
_IDX_SIZE = keys.IDX_VALUE.size
_LOG_PACK = keys.LOG_VALUE.pack
_REV_PACK = keys._REV.pack
_U64_PACK = keys._U64.pack
_MAIN_MAX = keys.MAIN_MAX
_SHORT = keys.SHORT_KEY_BYTES_MAX
_LATEST = reader.LATEST

# Live keys a DeleteRange scans before it writes their tombstones (see _delete).
DELETE_CHUNK_KEYS = 1024
_LEASE_AT = reader._LEASE_AT
_ZERO8 = reader._ZERO8
Rec = tuple[bytes, bytes]  # an LMDB (key, value) record

# A raw event: (main, sub, is_delete, key, create, version, lease, value).
RawEvent = tuple[int, int, bool, bytes, int, int, int, bytes]


class WriteBatch:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.dbs = store.dbs
        self.ltxn = store.env.begin(write=True)  # the LMDB write transaction of the batch
        self.idx = self.ltxn.cursor(db=self.dbs.idx)
        self.log = self.ltxn.cursor(db=self.dbs.log)
        self.rev = store.revision
        self.consistent_index = store.consistent_index
        self.compact_rev = store.compact_revision
        # Events are kept only if someone watches; publish() resets the hub's ring otherwise.
        self.events: list[RawEvent] | None = [] if store.watch_hub.active() else None
        self._sub = 0  # next sub revision inside the current write transaction
        self._done = False

    # ---- lifecycle ------------------------------------------------------------------------
    def commit(self) -> None:
        assert not self._done
        self._done = True
        if self.rev != self.store.revision:
            self.ltxn.put(b"rev", _U64_PACK(self.rev), db=self.dbs.meta)
        self.ltxn.commit()

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.ltxn.abort()

    # ---- public operations --------------------------------------------------------------
    def set_consistent_index(self, index: int) -> None:
        self.consistent_index = index
        self.ltxn.put(b"consistent_index", _U64_PACK(index), db=self.dbs.meta)

    def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        key = req.key
        if (
            0 < len(key) <= _SHORT
            and not req.lease
            and not req.prev_kv
            and not req.ignore_value
            and not req.ignore_lease
        ):
            return self._put_plain(key, req.value)
        validate.check_put(req)
        self._check_put_state(req)
        main = self.rev + 1
        self._sub = 0
        prev = self._put(req, main)
        self.rev = main
        resp = rpc_pb2.PutResponse()
        resp.header.revision = main
        if prev is not None:
            resp.prev_kv.CopyFrom(prev)
        return resp

    def _put_plain(self, key: bytes, value: bytes) -> rpc_pb2.PutResponse:
        """put() for the common case (short key, no lease, no options): same effect as _put,
        without its generality; it is the write hot path."""
        main = self.rev + 1
        ik = key.replace(b"\x00", b"\x00\xff") + b"\x00\x00"
        idx = self.idx
        create, version, olease = main, 1, 0
        if idx.set_range(ik):
            comp = idx.key()
            if comp[:-8] == ik:
                _, ocreate, oversion, olease = _IDX_UNPACK(idx.value())
                if oversion:
                    create, version = ocreate, oversion + 1
                else:
                    olease = 0
        self.log.put(
            _REV_PACK(main, b"_", 0),
            _LOG_PACK(create, version, 0, len(key)) + key + value,
            append=True,
        )
        idx.put(ik + (_MAIN_MAX - main).to_bytes(8, "big"), _IDX_PACK(0, create, version, 0))
        if olease:
            self._move_lease(ik, key, olease, 0)
        if self.events is not None:
            self.events.append((main, 0, False, key, create, version, 0, value))
        self.rev = main
        resp = rpc_pb2.PutResponse()
        resp.header.revision = main
        return resp

    def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        validate.check_delete(req)
        self._sub = 0
        resp = self._delete(req, self.rev + 1)
        if self._sub:
            self.rev += 1
        resp.header.revision = self.rev
        return resp

    def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        path = self._compare_path(req)
        self._check_txn_state(req, path)
        self._sub = 0
        main = self.rev + 1
        resp = self._exec_txn(req, path, 0, main)[0]
        if self._sub:
            self.rev = main
        resp.header.revision = self.rev
        return resp

    def compact(self, revision: int) -> None:
        # etcd's compactMainRev is -1 until the first compaction, so compact(0) succeeds once.
        floor = self.compact_rev if compaction.ever(self.ltxn, self.dbs) else -1
        if revision <= floor:
            raise errors.CompactedError(self.compact_rev)
        if revision > self.rev:
            raise errors.FutureRevisionError()
        compaction.schedule(self.ltxn, self.dbs, revision)
        self.compact_rev = revision
        compaction.step(self.ltxn, self.dbs, compaction.BATCH_RECORDS_MAX)

    def lease_grant(self, lease_id: int, ttl: int) -> None:
        k = _U64_PACK(lease_id & _MAIN_MAX)
        if not self.ltxn.put(k, _U64_PACK(ttl), db=self.dbs.lease, overwrite=False):
            raise errors.LeaseExistsError()

    def lease_revoke(self, lease_id: int) -> None:
        k = _U64_PACK(lease_id & _MAIN_MAX)
        if self.ltxn.get(k, db=self.dbs.lease) is None:
            raise errors.LeaseNotFoundError()
        self._sub = 0
        main = self.rev + 1
        doomed = reader.lease_keys(self.ltxn, self.dbs, lease_id)  # in key order
        count = rpc_pb2.DeleteRangeResponse()  # _tombstones reports into a response
        for i in range(0, len(doomed), DELETE_CHUNK_KEYS):
            chunk = [self._live_raw(key) for key in doomed[i : i + DELETE_CHUNK_KEYS]]
            self._tombstones(chunk, main, False, count)
        assert count.deleted == len(doomed)
        self.ltxn.delete(k, db=self.dbs.lease)
        if self._sub:
            self.rev = main

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """A read inside the batch: sees the batch's earlier writes."""
        return reader.do_range(self.ltxn, self.dbs, req, self.rev, self.compact_rev, _LATEST)

    # ---- checks (before any write) --------------------------------------------------------
    def _check_put_state(self, req: rpc_pb2.PutRequest) -> None:
        if req.lease and self.ltxn.get(_U64_PACK(req.lease & _MAIN_MAX), db=self.dbs.lease) is None:
            raise errors.LeaseNotFoundError()
        if (req.ignore_value or req.ignore_lease) and reader.get_one(
            self.ltxn, self.dbs, req.key, _LATEST
        ) is None:
            raise errors.KeyNotFoundError()

    def _compare_path(self, req: rpc_pb2.TxnRequest) -> list[bool]:
        """etcd evaluates the compares of the whole chosen path, nested txns included, against
        the state before the txn."""
        ok = all(self._compare(c) for c in req.compare)
        path = [ok]
        for op in req.success if ok else req.failure:
            if op.WhichOneof("request") == "request_txn":
                path.extend(self._compare_path(op.request_txn))
        return path

    def _compare(self, c: rpc_pb2.Compare) -> bool:
        entries = list(reader.range_entries(self.ltxn, self.dbs, c.key, c.range_end, _LATEST))
        if not entries:
            if c.target == rpc_pb2.Compare.VALUE:
                return False
            return _compare_kv(c, None, b"")
        for e in entries:
            value = b""
            if c.target == rpc_pb2.Compare.VALUE:
                value = reader.get_value(self.ltxn, self.dbs, e.main, e.sub)
            if not _compare_kv(c, e, value):
                return False
        return True

    def _check_txn_state(self, req: rpc_pb2.TxnRequest, path: list[bool]) -> None:
        """etcd's order of checks on the chosen path: the request's own form (the gRPC layer,
        before apply), then every put (applier's checkPut), then every range (checkRange), each
        pass in op order through nested txns; so a put's error wins over an earlier range's."""
        self._each_op(req, path, 0, _check_op_form)
        self._each_op(req, path, 0, self._check_txn_put)
        self._each_op(req, path, 0, self._check_txn_range)

    def _each_op(
        self,
        req: rpc_pb2.TxnRequest,
        path: list[bool],
        at: int,
        check: Callable[[rpc_pb2.RequestOp, str | None], None],
    ) -> int:
        """Calls check(op, kind) for each non-txn op of the chosen path, depth first; returns
        the index in `path` after req's nested txns."""
        ops = req.success if path[at] else req.failure
        at += 1
        for op in ops:
            which = op.WhichOneof("request")
            if which == "request_txn":
                at = self._each_op(op.request_txn, path, at, check)
            else:
                check(op, which)
        return at

    def _check_txn_put(self, op: rpc_pb2.RequestOp, which: str | None) -> None:
        if which != "request_put":
            return
        req = op.request_put
        # Inside a txn etcd looks for the key before the lease (a plain Put does the reverse).
        if (req.ignore_value or req.ignore_lease) and reader.get_one(
            self.ltxn, self.dbs, req.key, _LATEST
        ) is None:
            raise errors.KeyNotFoundError()
        if req.lease and self.ltxn.get(_U64_PACK(req.lease & _MAIN_MAX), db=self.dbs.lease) is None:
            raise errors.LeaseNotFoundError()

    def _check_txn_range(self, op: rpc_pb2.RequestOp, which: str | None) -> None:
        if which != "request_range":
            return
        r = op.request_range.revision
        if r > self.rev:
            raise errors.FutureRevisionError()
        if 0 < r < self.compact_rev:
            raise errors.CompactedError(self.compact_rev)

    # ---- execution ------------------------------------------------------------------------
    def _exec_txn(
        self, req: rpc_pb2.TxnRequest, path: list[bool], at: int, main: int
    ) -> tuple[rpc_pb2.TxnResponse, int]:
        succeeded = path[at]
        at += 1
        resp = rpc_pb2.TxnResponse(succeeded=succeeded)
        for op in req.success if succeeded else req.failure:
            which = op.WhichOneof("request")
            out = resp.responses.add()
            if which == "request_range":
                cur = self.rev + 1 if self._sub else self.rev
                r = reader.do_range(
                    self.ltxn, self.dbs, op.request_range, cur, self.compact_rev, _LATEST
                )
                out.response_range.CopyFrom(r)
            elif which == "request_put":
                prev = self._put(op.request_put, main)
                pr = out.response_put
                pr.header.revision = main
                if prev is not None:
                    pr.prev_kv.CopyFrom(prev)
            elif which == "request_delete_range":
                dr = self._delete(op.request_delete_range, main)
                dr.header.revision = main if self._sub else self.rev
                out.response_delete_range.CopyFrom(dr)
            elif which == "request_txn":
                tr, at = self._exec_txn(op.request_txn, path, at, main)
                tr.header.SetInParent()  # etcd leaves a nested txn's header empty
                out.response_txn.CopyFrom(tr)
            else:
                raise errors.KeyNotFoundError()  # an empty RequestOp; check_txn rejects it first
        return resp, at

    def _put(self, req: rpc_pb2.PutRequest, main: int) -> kv_pb2.KeyValue | None:
        """Writes one put at (main, self._sub); returns the previous kv if req.prev_kv."""
        key = req.key
        if len(key) <= _SHORT:
            ik = key.replace(b"\x00", b"\x00\xff") + b"\x00\x00"
        else:
            ik = keys.ikey(key)
        idx = self.idx
        old: tuple[int, int, int, int] | None = None
        omain = 0
        if idx.set_range(ik):
            comp = idx.key()
            if comp[:-8] == ik:
                old = _IDX_UNPACK(idx.value())
                if old[2] == 0:
                    old = None  # a tombstone: the key starts a new generation
                else:
                    omain = _MAIN_MAX - int.from_bytes(comp[-8:], "big")
        value = req.value
        lease = req.lease
        prev = None
        if old is not None:
            osub, create, oversion, olease = old
            version = oversion + 1
            if req.prev_kv or req.ignore_value:
                ov = reader.get_value(self.ltxn, self.dbs, omain, osub)
                if req.ignore_value:
                    value = ov
                if req.prev_kv:
                    prev = kv_pb2.KeyValue(
                        key=key,
                        create_revision=create,
                        mod_revision=omain,
                        version=oversion,
                        value=ov,
                        lease=olease,
                    )
            if req.ignore_lease:
                lease = olease
        else:
            create, version, olease = main, 1, 0
        sub = self._sub
        self._sub = sub + 1
        self.log.put(
            _REV_PACK(main, b"_", sub),
            _LOG_PACK(create, version, lease, len(key)) + key + value,
            append=True,
        )
        iv = _IDX_PACK(sub, create, version, lease)
        idx.put(ik + (_MAIN_MAX - main).to_bytes(8, "big"), iv if len(key) <= _SHORT else iv + key)
        if lease != olease:
            self._move_lease(ik, key, olease, lease)
        if self.events is not None:
            self.events.append((main, sub, False, key, create, version, lease, value))
        return prev

    def _move_lease(self, ik: bytes, key: bytes, old: int, new: int) -> None:
        if old:
            self.ltxn.delete(_U64_PACK(old & _MAIN_MAX) + ik, db=self.dbs.lkeys)
        if new:
            self.ltxn.put(_U64_PACK(new & _MAIN_MAX) + ik, key, db=self.dbs.lkeys)

    def _delete(self, req: rpc_pb2.DeleteRangeRequest, main: int) -> rpc_pb2.DeleteRangeResponse:
        """Tombstones every live key of the range at (main, self._sub...), in key order.

        A big prefix delete is one of the slowest requests. It goes in chunks: scan up to
        DELETE_CHUNK_KEYS live keys (raw index records), write their tombstones with putmulti
        (log keys ascend: they append), then scan on from the key after the chunk's last (the
        chunk's keys are dead by then). Fresh memory costs more than the work here, and a chunk's
        records reuse the memory of the one before."""
        resp = rpc_pb2.DeleteRangeResponse()
        kr = reader.key_range(req.key, req.range_end)
        if kr is None:
            one = reader.get_one_raw(self.ltxn, self.dbs, req.key, _LATEST)
            if one is not None:
                self._tombstones([one], main, req.prev_kv, resp)
            return resp
        start, end = kr
        while end is None or start < end:
            scan = reader.iter_live_raw(self.ltxn, self.dbs, start, end, _LATEST)
            chunk = list(itertools.islice(scan, DELETE_CHUNK_KEYS))
            scan.close()  # its cursor must not outlive the writes below
            if chunk:
                self._tombstones(chunk, main, req.prev_kv, resp)
            if len(chunk) < DELETE_CHUNK_KEYS:
                break
            start = chunk[-1][0] + b"\x00"  # the smallest key after the chunk's last
        return resp

    def _tombstones(
        self, doomed: list[reader.Raw], main: int, prev_kv: bool, resp: rpc_pb2.DeleteRangeResponse
    ) -> None:
        """Deletes the live keys `doomed` (in key order) at (main, self._sub...)."""
        if prev_kv:
            reader.fill_kvs(self.ltxn, self.dbs, resp.prev_kvs, doomed)
        sub0 = self._sub
        self._sub = sub0 + len(doomed)
        log_records, idx_records = _tombstone_records(doomed, main, sub0)
        self.log.putmulti(log_records, append=True)
        self.idx.putmulti(idx_records)
        lkeys = self.dbs.lkeys
        delete = self.ltxn.delete
        for _, comp, v in doomed:
            if v[_LEASE_AT:_IDX_SIZE] != _ZERO8:  # the raw lease is the lkeys key's prefix
                delete(v[_LEASE_AT:_IDX_SIZE] + comp[:-8], db=lkeys)
        if self.events is not None:
            self.events.extend(
                (main, sub, True, r[0], 0, 0, 0, b"") for sub, r in enumerate(doomed, sub0)
            )
        resp.deleted += len(doomed)

    def _live_raw(self, key: bytes) -> reader.Raw:
        r = reader.get_one_raw(self.ltxn, self.dbs, key, _LATEST)
        assert r is not None, "a lease's attached key must be alive"
        return r


def _tombstone_records(
    doomed: list[reader.Raw], main: int, sub0: int
) -> tuple[list[Rec], list[Rec]]:
    """The log and index records of the tombstones (main, sub0...) of the doomed keys, each list
    in key order (for the log, that is log key order).
    Log: (main, sub, 't') -> create, version, lease 0, key length, key.
    Index: ikey + inverted main -> (sub, 0, 0, 0) [+ the key if long]."""
    head = _U64_PACK(main) + b"_"
    inv_main = keys.inv(main)
    zero = bytes(24)  # create, version and lease of a tombstone (both layouts)
    assert _LOG_PACK(0, 0, 0, 0) == zero + bytes(4) and _IDX_PACK(0, 0, 0, 0) == bytes(4) + zero
    log_records = []
    idx_records = []
    for sub, (key, comp, _) in enumerate(doomed, sub0):
        n = len(key)
        log_records.append((head + _U64_PACK(sub) + b"t", zero + n.to_bytes(4, "big") + key))
        iv = sub.to_bytes(4, "big") + zero
        idx_records.append((comp[:-8] + inv_main, iv + key if n > _SHORT else iv))
    return log_records, idx_records


def _check_op_form(op: rpc_pb2.RequestOp, which: str | None) -> None:
    """The gRPC layer's checks of one op (engine/validate.py), for callers that skipped them."""
    if which == "request_range":
        validate.check_range(op.request_range)
    elif which == "request_put":
        validate.check_put(op.request_put)
    elif which == "request_delete_range":
        validate.check_delete(op.request_delete_range)
    else:
        raise errors.KeyNotFoundError()  # an empty RequestOp; check_txn rejects it first


def _compare_kv(c: rpc_pb2.Compare, e: reader.Entry | None, value: bytes) -> bool:
    t = c.target
    if t == rpc_pb2.Compare.VALUE:
        a: Any = value
        b: Any = c.value
    elif t == rpc_pb2.Compare.CREATE:
        a, b = (e.create if e else 0), c.create_revision
    elif t == rpc_pb2.Compare.MOD:
        a, b = (e.main if e else 0), c.mod_revision
    elif t == rpc_pb2.Compare.VERSION:
        a, b = (e.version if e else 0), c.version
    else:
        a, b = (e.lease if e else 0), c.lease
    r = c.result
    if r == rpc_pb2.Compare.EQUAL:
        return bool(a == b)
    if r == rpc_pb2.Compare.NOT_EQUAL:
        return bool(a != b)
    if r == rpc_pb2.Compare.GREATER:
        return bool(a > b)
    return bool(a < b)
