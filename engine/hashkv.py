"""HashKV exactly as etcd 3.4 computes it (mvcc/kvstore.go HashByRev).

CRC-32C over the bucket name "key", then over each (revision key, marshalled mvccpb.KeyValue) in
revision order with main <= rev; a revision at or below the compaction revision counts only if
it is in the keep set at rev (the newest live revision of its key), unless that set is empty.
"""

from __future__ import annotations

from typing import Any

import crcmod.predefined

from api.mvccpb import kv_pb2
from engine import errors, keys, reader

crc32c = crcmod.predefined.mkCrcFun("crc-32c")


def hash_kv(
    txn: Any, dbs: reader.Dbs, rev: int, current: int, compacted: int
) -> tuple[int, int, int]:
    compact_rev = compacted if compacted else -1  # etcd's compactMainRev of a never-compacted store
    if 0 < rev <= compact_rev:
        raise errors.CompactedError(compacted)
    if rev > current:
        raise errors.FutureRevisionError()
    if rev <= 0:
        rev = current
    keep_empty = next(reader.iter_live(txn, dbs, b"", None, rev), None) is None
    h = crc32c(b"key")
    cur = txn.cursor(db=dbs.log)
    for k, v in cur:
        main, sub, tomb = keys.parse_rev_key(k)
        if main > rev:
            break
        create, version, lease, klen = keys.LOG_VALUE.unpack_from(v)
        key = bytes(v[keys.LOG_VALUE.size : keys.LOG_VALUE.size + klen])
        if main <= compact_rev:
            if keep_empty:
                if tomb and main == compact_rev:
                    continue  # kept for watchers (etcd#19179); etcd 3.4 has deleted it
            else:
                e = reader.get_one(txn, dbs, key, rev)
                if e is None or e.main != main or e.sub != sub:
                    continue
        if tomb:
            kv = kv_pb2.KeyValue(key=key)
        else:
            kv = kv_pb2.KeyValue(
                key=key,
                create_revision=create,
                mod_revision=main,
                version=version,
                value=bytes(v[keys.LOG_VALUE.size + klen :]),
                lease=lease,
            )
        h = crc32c(bytes(k), h)
        h = crc32c(kv.SerializeToString(), h)
    return h, compact_rev, current
