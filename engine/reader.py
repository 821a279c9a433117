"""Reads over the index and the revision log, inside any LMDB transaction (read or write).

A write transaction sees its own earlier writes, so the same code serves `store.range` and the
reads inside a batch or a Txn.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any, NamedTuple

from api.etcdserverpb import rpc_pb2
from api.mvccpb import kv_pb2
from engine import errors, keys
from engine.gosort import sort_like_go

_IDX_UNPACK = keys.IDX_VALUE.unpack_from
_IDX_SIZE = keys.IDX_VALUE.size
_LOG_UNPACK = keys.LOG_VALUE.unpack_from
_LOG_SIZE = keys.LOG_VALUE.size
_MAIN_MAX = keys.MAIN_MAX
_U64_UNPACK = keys._U64.unpack
_HASH_BYTES = keys.HASH_BYTES
# Byte offsets of the version and lease fields in an index value (IDX_VALUE: >Iqqq).
_VERSION_AT = 12
_LEASE_AT = 20
_ZERO8 = b"\x00" * 8
# A scan steps over at most this many records of one key's history before it seeks past them.
_SKIP_RECORDS_MAX = 8
assert _LEASE_AT + 8 == _IDX_SIZE, "the index value layout changed: fix the offsets"
LATEST = keys.MAIN_MAX - 1  # "read at the newest revision", including a write txn's own writes


class Entry(NamedTuple):
    """The state of one live key at some revision (the value is fetched separately)."""

    key: bytes
    main: int
    sub: int
    create: int
    version: int
    lease: int


# A live key's raw index record: (user key, index key = ikey + inverted main, index value);
# the index value of a long key may be cut to its fixed fields (IDX_VALUE, without the key).
Raw = tuple[bytes, bytes, bytes]


class Dbs(NamedTuple):
    meta: Any
    idx: Any
    log: Any
    lease: Any
    lkeys: Any


def _entry(key: bytes, comp: bytes, v: bytes) -> Entry:
    sub, create, version, lease = _IDX_UNPACK(v)
    return Entry(key, _MAIN_MAX - _U64_UNPACK(comp[-8:])[0], sub, create, version, lease)


def _key_of(ik: bytes, v: bytes) -> bytes:
    return v[_IDX_SIZE:] if len(v) > _IDX_SIZE else keys.decode_short_ikey(ik)


def get_one(txn: Any, dbs: Dbs, key: bytes, rev: int) -> Entry | None:
    """The newest entry of `key` at or below `rev`, or None if absent (or deleted) then."""
    r = get_one_raw(txn, dbs, key, rev)
    return None if r is None else _entry(*r)


def get_one_raw(txn: Any, dbs: Dbs, key: bytes, rev: int) -> Raw | None:
    """get_one as a raw index record."""
    ik = keys.ikey(key)
    cur = txn.cursor(db=dbs.idx)
    if not cur.set_range(ik + keys.inv(rev)):
        return None
    comp = cur.key()
    if comp[:-8] != ik:
        return None
    v = cur.value()
    return (key, comp, v) if v[_VERSION_AT:_LEASE_AT] != _ZERO8 else None


def iter_live(txn: Any, dbs: Dbs, start: bytes, end: bytes | None, rev: int) -> Iterator[Entry]:
    """Every key in [start, end) alive at `rev`, in key order. end None: unbounded."""
    for key, comp, v in iter_live_raw(txn, dbs, start, end, rev):
        yield _entry(key, comp, v)


def iter_live_raw(
    txn: Any, dbs: Dbs, start: bytes, end: bytes | None, rev: int
) -> Generator[Raw, None, None]:
    """iter_live as raw index records (key, index key, index value): a big delete needs only
    the ikey and the lease of each key, so it skips building Entry objects.

    One pass over the index in ikey order with the cursor's own iterator (a Python-level
    next() per record costs more than the record). A key's newest entry <= rev is the first of
    its records not above rev; the records around it are stepped over, and a run of more than
    _SKIP_RECORDS_MAX of them (a long history) is left with a seek instead. Long keys of one
    group are contiguous but in hash order: they are held until the group ends, then emitted
    in key order."""
    cur = txn.cursor(db=dbs.idx)
    stop = keys.upper_bound(end) if end is not None else None
    inv_rev = keys.inv(rev)
    group = b""  # the group prefix of `members`
    members: list[Raw] = []  # live keys of the current long-key group
    done_ik = b""  # the last key whose entry at rev was handled: its older records are skipped
    seen_ik = b""  # the last key seen with a record above rev
    skipped = 0  # records stepped over in a row
    seek: bytes | None = keys.lower_bound(start)
    while seek is not None and cur.set_range(seek):
        seek = None
        for comp, v in cur.iternext():
            ik = comp[:-8]
            if ik == done_ik:  # older history of a key already handled
                skipped += 1
                if skipped > _SKIP_RECORDS_MAX:
                    seek = ik + keys.INV_END
                    break
                continue
            if stop is not None and ik >= stop:
                break
            if comp[-8:] < inv_rev:  # above rev: the key's entry at rev is further on
                skipped = skipped + 1 if ik == seen_ik else 1
                seen_ik = ik
                if skipped > _SKIP_RECORDS_MAX:
                    seek = ik + inv_rev
                    break
                continue
            done_ik = ik
            skipped = 0
            if len(v) > _IDX_SIZE:
                g = ik[:-_HASH_BYTES]
                if g != group:
                    if len(members) == 1 and _within(members[0][0], start, end):
                        yield members[0]  # most groups hold one key
                    elif members:
                        yield from _group_in_order(members, start, end)
                    members = []
                    group = g
                if v[_VERSION_AT:_LEASE_AT] != _ZERO8:  # version 0 is a tombstone
                    # Only the fixed fields of v are kept: a big delete holds every Raw, and
                    # fresh memory (page faults) is most of what a scan of long keys costs.
                    members.append((v[_IDX_SIZE:], comp, v[:_IDX_SIZE]))
                continue
            if members:
                yield from _group_in_order(members, start, end)
                members = []
            if v[_VERSION_AT:_LEASE_AT] != _ZERO8:
                yield ik[:-2].replace(b"\x00\xff", b"\x00"), comp, v  # keys.decode_short_ikey
    if members:
        yield from _group_in_order(members, start, end)


def _group_in_order(members: list[Raw], start: bytes, end: bytes | None) -> list[Raw]:
    """A long-key group's live members within [start, end), in key order."""
    members.sort()  # keys are distinct, so the tuples sort by key
    return [m for m in members if _within(m[0], start, end)]


def _within(key: bytes, start: bytes, end: bytes | None) -> bool:
    return key >= start and (end is None or key < end)


def get_value(txn: Any, dbs: Dbs, main: int, sub: int) -> bytes:
    rec = txn.get(keys.rev_key(main, sub), db=dbs.log)
    assert rec is not None, f"index points at a missing log record {(main, sub)}"
    klen = _LOG_UNPACK(rec)[3]
    return bytes(rec[_LOG_SIZE + klen :])


def to_kv(txn: Any, dbs: Dbs, e: Entry, with_value: bool = True) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=e.key,
        create_revision=e.create,
        mod_revision=e.main,
        version=e.version,
        value=get_value(txn, dbs, e.main, e.sub) if with_value else b"",
        lease=e.lease,
    )


def key_range(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None] | None:
    """etcd's range_end forms: '' one key, '\\0' from key, else [key, range_end).

    Returns (start, end) with end None for unbounded, or None for the single-key form."""
    if not range_end:
        return None
    if range_end == b"\x00":
        return key, None
    return key, range_end


def check_revision(rev: int, current: int, compacted: int) -> int:
    if rev > current:
        raise errors.FutureRevisionError()
    if rev <= 0:
        return current
    if rev < compacted:
        raise errors.CompactedError(compacted)
    return rev


def range_entries(txn: Any, dbs: Dbs, key: bytes, range_end: bytes, rev: int) -> Iterator[Entry]:
    for r in range_raw(txn, dbs, key, range_end, rev):
        yield _entry(*r)


def range_raw(txn: Any, dbs: Dbs, key: bytes, range_end: bytes, rev: int) -> Iterator[Raw]:
    """range_entries as raw index records."""
    kr = key_range(key, range_end)
    if kr is None:
        r = get_one_raw(txn, dbs, key, rev)
        if r is not None:
            yield r
        return
    start, end = kr
    if end is not None and end <= start:
        return
    yield from iter_live_raw(txn, dbs, start, end, rev)


_SORT_KEYS = {
    rpc_pb2.RangeRequest.KEY: lambda e: e.key,
    rpc_pb2.RangeRequest.VERSION: lambda e: e.version,
    rpc_pb2.RangeRequest.CREATE: lambda e: e.create,
    rpc_pb2.RangeRequest.MOD: lambda e: e.main,
}


def _value_of(kv: kv_pb2.KeyValue) -> bytes:
    return kv.value


def do_range(
    txn: Any, dbs: Dbs, req: rpc_pb2.RangeRequest, current: int, compacted: int, read_rev: int
) -> rpc_pb2.RangeResponse:
    """Range as etcd's applier does it. `current` is the revision reported and checked against;
    `read_rev` is what revision 0 reads at (LATEST inside a write txn)."""
    if not req.key:
        raise errors.EmptyKeyError()
    rev = read_rev if req.revision <= 0 else check_revision(req.revision, current, compacted)
    if req.revision > 0 and rev < compacted:
        raise errors.CompactedError(compacted)
    resp = rpc_pb2.RangeResponse()
    resp.header.revision = current
    filtered = bool(
        req.min_mod_revision
        or req.max_mod_revision
        or req.min_create_revision
        or req.max_create_revision
    )
    order = req.sort_order
    if req.sort_target != rpc_pb2.RangeRequest.KEY and order == rpc_pb2.RangeRequest.NONE:
        order = rpc_pb2.RangeRequest.ASCEND
    entries = list(range_entries(txn, dbs, req.key, req.range_end, rev))
    resp.count = len(entries)
    if req.count_only:
        return resp
    if filtered:
        entries = [e for e in entries if _passes(req, e)]
    with_value = not req.keys_only
    limit = req.limit
    if limit > 0 and req.sort_order == rpc_pb2.RangeRequest.NONE and not filtered:
        # etcd 3.4 decides what to fetch from the order as sent: with none (and no filter) it
        # fetches limit + 1 keys in key order, and only then sorts them by a non-KEY target.
        del entries[limit + 1 :]
    if order != rpc_pb2.RangeRequest.NONE and req.sort_target == rpc_pb2.RangeRequest.VALUE:
        kvs = [to_kv(txn, dbs, e) for e in entries]
        sort_like_go(kvs, _value_of, order == rpc_pb2.RangeRequest.DESCEND)
        if limit > 0 and len(kvs) > limit:
            del kvs[limit:]
            resp.more = True
        if req.keys_only:
            for kv in kvs:
                kv.value = b""
        resp.kvs.extend(kvs)
        return resp
    if order != rpc_pb2.RangeRequest.NONE:
        skey = _SORT_KEYS[req.sort_target]
        sort_like_go(entries, skey, order == rpc_pb2.RangeRequest.DESCEND)
    if limit > 0 and len(entries) > limit:
        del entries[limit:]
        resp.more = True
    _fill(txn, dbs, resp, entries, with_value)
    return resp


def _fill(
    txn: Any, dbs: Dbs, resp: rpc_pb2.RangeResponse, entries: list[Entry], with_value: bool
) -> None:
    """Append entries to resp.kvs (field by field: much cheaper than KeyValue(**kwargs))."""
    add = resp.kvs.add
    get = txn.get
    log = dbs.log
    rev_pack = keys._REV.pack
    for e in entries:
        kv = add()
        kv.key = e.key
        kv.create_revision = e.create
        kv.mod_revision = e.main
        kv.version = e.version
        if e.lease:
            kv.lease = e.lease
        if with_value:
            rec = get(rev_pack(e.main, b"_", e.sub), db=log)
            kv.value = rec[_LOG_SIZE + len(e.key) :]


def fill_kvs(txn: Any, dbs: Dbs, kvs: Any, raws: list[Raw]) -> None:
    """Append the raw records to a repeated KeyValue field (a delete's prev_kvs), values too."""
    add = kvs.add
    get = txn.get
    log = dbs.log
    rev_pack = keys._REV.pack
    for key, comp, v in raws:
        sub, create, version, lease = _IDX_UNPACK(v)
        main = _MAIN_MAX - _U64_UNPACK(comp[-8:])[0]
        rec = get(rev_pack(main, b"_", sub), db=log)
        assert rec is not None, f"index points at a missing log record {(main, sub)}"
        kv = add()
        kv.key = key
        kv.create_revision = create
        kv.mod_revision = main
        kv.version = version
        kv.value = rec[_LOG_SIZE + len(key) :]
        if lease:
            kv.lease = lease


def _passes(req: rpc_pb2.RangeRequest, e: Entry) -> bool:
    if req.max_mod_revision and e.main > req.max_mod_revision:
        return False
    if req.min_mod_revision and e.main < req.min_mod_revision:
        return False
    if req.max_create_revision and e.create > req.max_create_revision:
        return False
    return not (req.min_create_revision and e.create < req.min_create_revision)


def lease_keys(txn: Any, dbs: Dbs, lease_id: int) -> list[bytes]:
    """The keys attached to a lease, in key order (a revoke deletes them in this order)."""
    prefix = keys.u64(lease_id & keys.MAIN_MAX)
    cur = txn.cursor(db=dbs.lkeys)
    out = []
    ok = cur.set_range(prefix)
    while ok:
        k = cur.key()
        if k[:8] != prefix:
            break
        out.append(bytes(cur.value()))
        ok = cur.next()
    out.sort()
    return out
