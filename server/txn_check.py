"""Request validation before proposing, as etcd's v3rpc layer does it (api/v3rpc/key.go).

Bad input is refused here with etcd's exact error, so it never reaches Raft or the WAL. The
duplicate-key rule (checkIntervals): within one branch, a key put twice, or put inside a range
deleted in the same branch (or a nested one), is refused; the same key put in both the then
and else branches of one nested txn is fine since only one of them runs.
"""

from __future__ import annotations

from typing import Any

from . import errors

_SORT_ORDERS = range(0, 3)
_SORT_TARGETS = range(0, 5)


def check_range(req: Any) -> None:
    if not req.key:
        raise errors.KeyNotProvidedError()
    if req.sort_order not in _SORT_ORDERS or req.sort_target not in _SORT_TARGETS:
        raise errors.InvalidSortOptionError()


def check_put(req: Any) -> None:
    if not req.key:
        raise errors.KeyNotProvidedError()
    if req.ignore_value and req.value:
        raise errors.ValueProvidedError()
    if req.ignore_lease and req.lease:
        raise errors.LeaseProvidedError()


def check_delete(req: Any) -> None:
    if not req.key:
        raise errors.KeyNotProvidedError()


def check_txn(req: Any, max_txn_ops: int) -> None:
    _check_txn_ops(req, max_txn_ops)
    _check_intervals(req.success)
    _check_intervals(req.failure)


def _check_txn_ops(req: Any, max_txn_ops: int) -> None:
    ops = max(len(req.compare), len(req.success), len(req.failure))
    if ops > max_txn_ops:
        raise errors.TooManyOpsError()
    for compare in req.compare:
        if not compare.key:
            raise errors.KeyNotProvidedError()
    for op in (*req.success, *req.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range":
            check_range(op.request_range)
        elif kind == "request_put":
            check_put(op.request_put)
        elif kind == "request_delete_range":
            check_delete(op.request_delete_range)
        elif kind == "request_txn":
            _check_txn_ops(op.request_txn, max_txn_ops)


class _Deletes:
    """Deleted intervals [begin, end), compared as etcd 3.4's interval tree compares them:
    an empty end means the one key; any other end is taken literally, so a from-key delete
    (end "\x00") covers no key here, and etcd accepts a put under it in the same txn."""

    def __init__(self) -> None:
        self.intervals: list[tuple[bytes, bytes | None]] = []

    def add(self, key: bytes, range_end: bytes) -> None:
        self.intervals.append((key, range_end or None))

    def hits(self, key: bytes) -> bool:
        for begin, end in self.intervals:
            if end is None:
                if key == begin:
                    return True
            elif begin <= key < end:
                return True
        return False


def _check_intervals(ops: Any) -> tuple[set[bytes], _Deletes]:
    dels = _Deletes()
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            dels.add(op.request_delete_range.key, op.request_delete_range.range_end)
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _check_intervals(op.request_txn.success)
        puts_else, dels_else = _check_intervals(op.request_txn.failure)
        for key in puts_then:
            if key in puts or dels.hits(key):
                raise errors.DuplicateKeyError()
            puts.add(key)
        for key in puts_else:
            if (key in puts and key not in puts_then) or dels.hits(key):
                raise errors.DuplicateKeyError()
            puts.add(key)
        dels.intervals.extend(dels_then.intervals)
        dels.intervals.extend(dels_else.intervals)
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        key = op.request_put.key
        if key in puts or dels.hits(key):
            raise errors.DuplicateKeyError()
        puts.add(key)
    return puts, dels
