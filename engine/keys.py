"""Byte layouts of the engine's LMDB tables (theory of operation in engine/store.py).

Index key ("ikey") of a user key: an order-preserving, prefix-free encoding that fits LMDB's
511-byte key limit.
- Short keys (<= SHORT_KEY_BYTES_MAX raw bytes): every 0x00 becomes 0x00 0xff, then 0x00 0x00
  terminates. Byte order of ikeys equals byte order of user keys.
- Long keys: the escaped first SHORT_KEY_BYTES_MAX bytes, then 0x00 0x01, then a 16-byte BLAKE2b of
  the whole key. Such a "group" (keys sharing those first bytes) sorts correctly against every
  other key, but inside the group the order is by hash: readers sort a group by full key (the index
  value carries it), and groups are rare.
Index table key: ikey + 8-byte big-endian (2**64-1 - main revision), so a key's newest entry comes
first and "newest entry <= rev" is one set_range.
Revision log key: etcd's own 17-byte (main BE, '_', sub BE) form, plus 't' for tombstones, so the
log is in revision order and hashing reproduces etcd's bytes.
"""

from __future__ import annotations

import hashlib
import struct

SHORT_KEY_BYTES_MAX = 200
HASH_BYTES = 16  # the BLAKE2b digest that ends a long key's ikey
MAIN_MAX = (1 << 64) - 1
_U64 = struct.Struct(">Q")
_REV = struct.Struct(">Q1sQ")

# Index value: sub, create_revision, version (0 = tombstone), lease; long keys append the key.
IDX_VALUE = struct.Struct(">Iqqq")
# Log value: create_revision, version, lease, key length; then the key, then the value.
LOG_VALUE = struct.Struct(">qqqI")
INV_ZERO = b"\x00" * 8  # inverted revision of the newest possible entry
INV_END = b"\xff" * 8  # after every entry of an ikey


def ikey(key: bytes) -> bytes:
    if len(key) <= SHORT_KEY_BYTES_MAX:
        return key.replace(b"\x00", b"\x00\xff") + b"\x00\x00"
    return group_prefix(key) + hashlib.blake2b(key, digest_size=HASH_BYTES).digest()


def group_prefix(key: bytes) -> bytes:
    """The ikey prefix every long key with the same first bytes shares."""
    return key[:SHORT_KEY_BYTES_MAX].replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def is_long(key: bytes) -> bool:
    return len(key) > SHORT_KEY_BYTES_MAX


def decode_short_ikey(ik: bytes) -> bytes:
    return ik[:-2].replace(b"\x00\xff", b"\x00")


def lower_bound(key: bytes) -> bytes:
    """The smallest ikey of any user key >= key."""
    if len(key) <= SHORT_KEY_BYTES_MAX:
        return ikey(key)
    return group_prefix(key)


def upper_bound(end: bytes) -> bytes:
    """Every user key < end has an ikey < this bound (long keys of end's group need a check)."""
    if len(end) <= SHORT_KEY_BYTES_MAX:
        return ikey(end)
    return end[:SHORT_KEY_BYTES_MAX].replace(b"\x00", b"\x00\xff") + b"\x00\x02"


def inv(main: int) -> bytes:
    return _U64.pack(MAIN_MAX - main)


def uninv(b: bytes) -> int:
    return MAIN_MAX - int(_U64.unpack(b)[0])


def rev_key(main: int, sub: int, tombstone: bool = False) -> bytes:
    k = _REV.pack(main, b"_", sub)
    return k + b"t" if tombstone else k


def parse_rev_key(k: bytes) -> tuple[int, int, bool]:
    main, _, sub = _REV.unpack(k[:17])
    return main, sub, len(k) == 18


def u64(n: int) -> bytes:
    return _U64.pack(n)


def read_u64(b: bytes) -> int:
    return int(_U64.unpack(b)[0])


def prefix_end(key: bytes) -> bytes:
    """etcd's GetPrefixRangeEnd: the range_end that selects every key with this prefix."""
    end = bytearray(key)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"
