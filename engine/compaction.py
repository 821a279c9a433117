"""Compaction: drop the history no read at or above the compaction revision C can see.

etcd keeps, per key, its newest revision <= C unless that is a tombstone, and everything above C.
We also keep a tombstone at exactly C (until the next compaction), so a watcher starting at C
still sees that deletion: etcd 3.4 loses it (etcd#19179). The previous compaction left at most
one revision per key at or below its revision F (live, or a tombstone at F), so only the log
records in [F, C] need visiting: each one makes every older revision of its key dead, and a
tombstone below C with no newer revision <= C dies with its history. Records are visited in
revision order in bounded batches; the resume point is stored in `meta` in the same transaction
as each batch's deletions, so a crash resumes exactly where the last committed batch ended.
Reads stay correct between batches: a revision is removed only once a newer one <= C hides it
(or together with the tombstone that hides it).
"""

from __future__ import annotations

from typing import Any

from engine import keys, reader

BATCH_RECORDS_MAX = 1000

_COMPACT = b"compact_rev"
_FINISHED = b"compact_finished_rev"
_CURSOR = b"compact_cursor"


def _get(txn: Any, dbs: reader.Dbs, name: bytes) -> int:
    v = txn.get(name, db=dbs.meta)
    return 0 if v is None else keys.read_u64(v)


def pending(txn: Any, dbs: reader.Dbs) -> bool:
    return _get(txn, dbs, _FINISHED) < _get(txn, dbs, _COMPACT)


def schedule(txn: Any, dbs: reader.Dbs, revision: int) -> None:
    """Record compaction at `revision`. A compaction still in progress keeps its resume point:
    what it processed is also correct for the higher revision."""
    if not pending(txn, dbs):
        # From the previous compaction revision itself: a tombstone kept there goes now.
        start = keys.rev_key(_get(txn, dbs, _FINISHED), 0)
        txn.put(_CURSOR, start, db=dbs.meta)
    txn.put(_COMPACT, keys.u64(revision), db=dbs.meta)


def step(txn: Any, dbs: reader.Dbs, batch_records_max: int) -> bool:
    """Process up to `batch_records_max` log records of the pending compaction. True if more."""
    if not pending(txn, dbs):
        return False
    target = _get(txn, dbs, _COMPACT)
    cursor = txn.cursor(db=dbs.log)
    todo: list[tuple[bytes, bytes]] = []
    ok = cursor.set_range(txn.get(_CURSOR, db=dbs.meta))
    while ok and len(todo) < batch_records_max:
        k = cursor.key()
        if keys.parse_rev_key(k)[0] > target:
            ok = False
            break
        todo.append((bytes(k), bytes(cursor.value())))
        ok = cursor.next()
    next_key = bytes(cursor.key()) if ok else None
    for k, v in todo:
        _visit(txn, dbs, k, v, target)
    if next_key is None or keys.parse_rev_key(next_key)[0] > target:
        txn.put(_FINISHED, keys.u64(target), db=dbs.meta)
        txn.delete(_CURSOR, db=dbs.meta)
        return False
    txn.put(_CURSOR, next_key, db=dbs.meta)
    return True


def _visit(txn: Any, dbs: reader.Dbs, log_key: bytes, rec: bytes, target: int) -> None:
    main, sub, tomb = keys.parse_rev_key(log_key)
    klen = keys.LOG_VALUE.unpack_from(rec)[3]
    key = rec[keys.LOG_VALUE.size : keys.LOG_VALUE.size + klen]
    ik = keys.ikey(key)
    cur = txn.cursor(db=dbs.idx)
    if not cur.set_key(ik + keys.inv(main)) or keys.IDX_VALUE.unpack_from(cur.value())[0] != sub:
        # The key changed twice in one revision: the index holds only the later change.
        txn.delete(log_key, db=dbs.log)
        return
    ok = cur.next()
    while ok:  # everything older than this record is hidden by it
        comp = cur.key()
        if comp[:-8] != ik:
            break
        osub, _, over, _ = keys.IDX_VALUE.unpack_from(cur.value())
        txn.delete(keys.rev_key(keys.uninv(comp[-8:]), osub, over == 0), db=dbs.log)
        ok = cur.delete() and cur.key()[:-8] == ik
    if not tomb or main == target:
        return  # a tombstone at the compaction revision stays until the next compaction
    cur.set_key(ik + keys.inv(main))
    newer = cur.prev() and cur.key()[:-8] == ik
    if newer and keys.uninv(cur.key()[-8:]) <= target:
        return  # the newer revision removes this tombstone when its turn comes
    cur.set_key(ik + keys.inv(main))
    cur.delete()
    txn.delete(log_key, db=dbs.log)
