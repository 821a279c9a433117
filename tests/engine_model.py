"""A small reference model of etcd's MVCC semantics: one dict per revision.

Used by the engine's state-machine test; deliberately naive (copies the whole state per
revision) so it is easy to trust.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from api.etcdserverpb import rpc_pb2 as pb
from engine import errors


@dataclass(frozen=True)
class KV:
    key: bytes
    value: bytes
    create: int
    mod: int
    version: int
    lease: int


@dataclass
class Model:
    states: list[dict[bytes, KV]] = field(default_factory=lambda: [{}, {}])  # index = revision
    events: list[list[tuple[str, KV]]] = field(default_factory=lambda: [[], []])
    leases: dict[int, int] = field(default_factory=dict)
    compacted: int = 0

    @property
    def rev(self) -> int:
        return len(self.states) - 1

    # -- writes: each returns the new state and events, or raises like the engine -----------
    def begin(self) -> tuple[dict[bytes, KV], list[tuple[str, KV]]]:
        return dict(self.states[-1]), []

    def commit(self, state: dict[bytes, KV], evs: list[tuple[str, KV]]) -> None:
        if evs:
            self.states.append(state)
            self.events.append(evs)

    def check_put(self, state: dict[bytes, KV], req: pb.PutRequest, in_txn: bool = False) -> None:
        """A plain Put checks the lease first; a put inside a txn the key first (etcd 3.4)."""
        if in_txn and (req.ignore_value or req.ignore_lease) and req.key not in state:
            raise errors.KeyNotFoundError()
        if req.lease and req.lease not in self.leases:
            raise errors.LeaseNotFoundError()
        if (req.ignore_value or req.ignore_lease) and req.key not in state:
            raise errors.KeyNotFoundError()

    def put(self, state: dict[bytes, KV], evs: list, req: pb.PutRequest, rev: int) -> KV | None:
        old = state.get(req.key)
        value = old.value if req.ignore_value else req.value
        lease = old.lease if req.ignore_lease else req.lease
        if old is None:
            kv = KV(req.key, value, rev, rev, 1, lease)
        else:
            kv = KV(req.key, value, old.create, rev, old.version + 1, lease)
        state[req.key] = kv
        evs.append(("PUT", kv))
        return old

    def delete(self, state: dict[bytes, KV], evs: list, key: bytes, end: bytes, rev: int) -> list:
        doomed = [state[k] for k in sorted(state) if in_range(k, key, end)]
        for kv in doomed:
            del state[kv.key]
            evs.append(("DELETE", KV(kv.key, b"", 0, rev, 0, 0)))
        return doomed

    def state_at(self, rev: int) -> dict[bytes, KV]:
        if rev > self.rev:
            raise errors.FutureRevisionError()
        if rev <= 0:
            rev = self.rev
        if rev < self.compacted:
            raise errors.CompactedError(self.compacted)
        return self.states[rev]

    def range(self, req: pb.RangeRequest, state: dict[bytes, KV] | None = None) -> tuple:
        st = self.state_at(req.revision) if state is None else state
        kvs = [st[k] for k in sorted(st) if in_range(k, req.key, req.range_end)]
        count = len(kvs)
        if req.count_only:
            return count, [], False
        if req.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod <= req.max_mod_revision]
        if req.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod >= req.min_mod_revision]
        if req.max_create_revision:
            kvs = [kv for kv in kvs if kv.create <= req.max_create_revision]
        if req.min_create_revision:
            kvs = [kv for kv in kvs if kv.create >= req.min_create_revision]
        filters = (req.max_mod_revision, req.min_mod_revision, req.max_create_revision,
                   req.min_create_revision)  # fmt: skip
        if req.limit > 0 and req.sort_order == pb.RangeRequest.NONE and not any(filters):
            kvs = kvs[: req.limit + 1]  # etcd 3.4 fetches limit + 1 in key order, then sorts
        order = req.sort_order
        if req.sort_target != pb.RangeRequest.KEY and order == pb.RangeRequest.NONE:
            order = pb.RangeRequest.ASCEND
        if order != pb.RangeRequest.NONE:
            attr = {0: "key", 1: "version", 2: "create", 3: "mod", 4: "value"}[req.sort_target]
            kvs.sort(key=lambda kv: getattr(kv, attr), reverse=order == pb.RangeRequest.DESCEND)
        more = False
        if req.limit > 0 and len(kvs) > req.limit:
            kvs, more = kvs[: req.limit], True
        if req.keys_only:
            kvs = [replace(kv, value=b"") for kv in kvs]
        return count, kvs, more

    def compare(self, st: dict[bytes, KV], c: pb.Compare) -> bool:
        kvs = [st[k] for k in sorted(st) if in_range(k, c.key, c.range_end)]
        if not kvs:
            if c.target == pb.Compare.VALUE:
                return False
            kvs = [KV(c.key, b"", 0, 0, 0, 0)]
        for kv in kvs:
            a, b = {
                pb.Compare.VERSION: (kv.version, c.version),
                pb.Compare.CREATE: (kv.create, c.create_revision),
                pb.Compare.MOD: (kv.mod, c.mod_revision),
                pb.Compare.VALUE: (kv.value, c.value),
                pb.Compare.LEASE: (kv.lease, c.lease),
            }[c.target]
            ok = {
                pb.Compare.EQUAL: a == b,
                pb.Compare.NOT_EQUAL: a != b,
                pb.Compare.GREATER: a > b,
                pb.Compare.LESS: a < b,
            }[c.result]
            if not ok:
                return False
        return True


def in_range(k: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return k == key
    if end == b"\x00":
        return k >= key
    return key <= k < end


def kv_tuple(kv: object) -> tuple:
    """A protobuf KeyValue or a model KV as a comparable tuple."""
    if isinstance(kv, KV):
        return (kv.key, kv.value, kv.create, kv.mod, kv.version, kv.lease)
    return (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)  # type: ignore[attr-defined]
