"""Member and cluster IDs derived as etcd derives them, so the same flags give the same IDs.

etcd (etcdserver/api/membership/member.go, cluster.go): a member's ID is the first 8 bytes
(big-endian) of SHA-1 over its sorted peer URLs joined with "" followed by the cluster token;
the cluster ID is the first 8 bytes of SHA-1 over the sorted member IDs, each 8 bytes
big-endian.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable


def member_id(peer_urls: Iterable[str], token: str) -> int:
    data = "".join(sorted(peer_urls)).encode() + token.encode()
    return int(struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0])


def cluster_id(member_ids: Iterable[int]) -> int:
    data = b"".join(struct.pack(">Q", m) for m in sorted(member_ids))
    return int(struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0])


def parse_initial_cluster(text: str) -> list[tuple[str, str]]:
    """`name=url,name=url` as (name, url) pairs, in order."""
    pairs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep:
            raise ValueError(f"invalid initial-cluster entry {item!r}")
        pairs.append((name, url))
    return pairs
