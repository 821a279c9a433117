"""The applier: committed Raft entries into the engine, one write batch per Ready.

Theory of operation: runs on the storage thread only (it owns the engine's write transaction).
`apply(entries)` opens one `write_batch`, decodes each normal entry's InternalRequest, calls the
engine, records the response (or the typed error, which changed nothing) for the handler
waiting on that request ID, and writes the index of the last entry as the consistent index in
the same transaction, so replaying the WAL above it after a crash is idempotent. Entries from
other members (no local waiter) are applied the same way; their results are simply dropped.

Alarms live here because they gate what the applier accepts: while NOSPACE is active every
member rejects Put, Txn with a put and LeaseGrant. The alarm itself is raised by an Alarm
entry, which the server proposes when a request fails its quota check (Node.check_quota).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from api.etcdserverpb import internal_pb2, rpc_pb2

from . import errors

NOSPACE = rpc_pb2.AlarmType.NOSPACE
CORRUPT = rpc_pb2.AlarmType.CORRUPT
ENTRY_NORMAL = 0

# A result for a waiting handler: the response message or the error to raise.
Result = tuple[int, Any]


def txn_has_put(txn: rpc_pb2.TxnRequest) -> bool:
    for op in (*txn.success, *txn.failure):
        kind = op.WhichOneof("request")
        if kind == "request_put":
            return True
        if kind == "request_txn" and txn_has_put(op.request_txn):
            return True
    return False


def txn_is_read_only(txn: rpc_pb2.TxnRequest) -> bool:
    for op in (*txn.success, *txn.failure):
        kind = op.WhichOneof("request")
        if kind in ("request_put", "request_delete_range"):
            return False
        if kind == "request_txn" and not txn_is_read_only(op.request_txn):
            return False
    return True


class Applier:
    """Applies committed entries to `store`; owned by the storage thread."""

    def __init__(self, store: Any, member_id: int, cluster_id: int) -> None:
        self.store = store
        self.member_id = member_id
        self.cluster_id = cluster_id
        # Invariant: holds only (member_id, alarm type) pairs with type != NONE.
        self.alarms: set[tuple[int, int]] = set()
        # Set when a Compact was applied; the storage thread then runs the background steps.
        self.compaction_scheduled = False
        params = inspect.signature(store.write_batch).parameters
        # The WAL is the durability point: the engine commits without fsync when it can, and
        # is synced before a snapshot lets the WAL go.
        self._batch_kwargs = {"sync": False} if "sync" in params else {}

    def apply(self, entries: Sequence[Any]) -> list[Result]:
        """Apply `entries` (committed, in index order) in one engine transaction."""
        results: list[Result] = []
        # At start Raft re-delivers every committed entry after the snapshot (so membership
        # changes are replayed); those the engine already holds are skipped here.
        applied = self.store.consistent_index
        if entries and entries[0].index <= applied:
            self._replay_alarms([e for e in entries if e.index <= applied])
            entries = [e for e in entries if e.index > applied]
        if not entries:
            return results
        with self.store.write_batch(**self._batch_kwargs) as batch:
            for entry in entries:
                if entry.type != ENTRY_NORMAL or not entry.data:
                    continue
                request = internal_pb2.InternalRequest.FromString(entry.data)
                outcome = self._apply_one(batch, request, entry.term)
                if request.header.ID:
                    results.append((request.header.ID, outcome))
            batch.set_consistent_index(entries[-1].index)
        return results

    def _replay_alarms(self, entries: Sequence[Any]) -> None:
        """Alarms live in memory (the engine has no alarm table): at start, the alarm entries
        the engine already applied are replayed on top of the snapshot's alarms."""
        for entry in entries:
            if entry.type == ENTRY_NORMAL and entry.data:
                request = internal_pb2.InternalRequest.FromString(entry.data)
                if request.HasField("alarm"):
                    self._alarm(request.alarm)

    def _apply_one(self, batch: Any, request: Any, term: int) -> Any:
        try:
            response = self._dispatch(batch, request)
        except Exception as exc:  # typed engine/server errors go back to the waiting handler
            return exc
        if kind_has_no_header(request):
            return response
        header = response.header
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.raft_term = term
        if not header.revision:
            # Inside the batch the store's own revision is stale: the batch knows the new one.
            header.revision = batch.rev
        return response

    def _dispatch(self, batch: Any, request: Any) -> Any:
        kind = _kind(request)
        if self.alarms and kind in ("put", "txn", "lease_grant", "range", "delete_range"):
            self._check_alarms(kind, request)
        if kind == "put":
            return batch.put(request.put)
        if kind == "delete_range":
            return batch.delete_range(request.delete_range)
        if kind == "txn":
            return batch.txn(request.txn)
        if kind == "compaction":
            batch.compact(request.compaction.revision)
            self.compaction_scheduled = True
            return rpc_pb2.CompactionResponse()
        if kind == "lease_grant":
            batch.lease_grant(request.lease_grant.ID, request.lease_grant.TTL)
            return rpc_pb2.LeaseGrantResponse(
                ID=request.lease_grant.ID, TTL=request.lease_grant.TTL
            )
        if kind == "lease_revoke":
            batch.lease_revoke(request.lease_revoke.ID)
            return rpc_pb2.LeaseRevokeResponse()
        if kind == "alarm":
            return self._alarm(request.alarm)
        if kind == "lease_checkpoint":
            return rpc_pb2.LeaseCheckpointResponse()
        if kind == "range":
            return self.store.range(request.range)
        raise AssertionError(f"unknown internal request {request!r}")

    def _check_alarms(self, kind: str, request: Any) -> None:
        active = {alarm for _, alarm in self.alarms}
        if CORRUPT in active:
            raise errors.CorruptError()
        if NOSPACE in active and (
            kind in ("put", "lease_grant") or (kind == "txn" and txn_has_put(request.txn))
        ):
            raise errors.NoSpaceError()

    def _alarm(self, req: Any) -> Any:
        response = rpc_pb2.AlarmResponse()
        if req.action == rpc_pb2.AlarmRequest.GET:
            pairs = sorted(self.alarms)
            if req.alarm != rpc_pb2.AlarmType.NONE:
                pairs = [p for p in pairs if p[1] == req.alarm]
        elif req.action == rpc_pb2.AlarmRequest.ACTIVATE:
            if req.alarm == rpc_pb2.AlarmType.NONE:
                return response
            self.alarms.add((req.memberID, req.alarm))
            pairs = [(req.memberID, req.alarm)]
        else:
            pair = (req.memberID, req.alarm)
            if pair not in self.alarms:
                return response
            self.alarms.discard(pair)
            pairs = [pair]
        for member, alarm in pairs:
            response.alarms.add(memberID=member, alarm=alarm)
        return response


def kind_has_no_header(request: Any) -> bool:
    """etcd answers Alarm with an empty header (its applier never fills one)."""
    return bool(request.HasField("alarm"))


def _kind(request: Any) -> str:
    for name in (
        "put",
        "delete_range",
        "txn",
        "compaction",
        "lease_grant",
        "lease_revoke",
        "alarm",
        "lease_checkpoint",
        "range",
    ):
        if request.HasField(name):
            return name
    raise AssertionError(f"empty internal request {request!r}")
