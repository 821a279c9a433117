"""Request checks the server runs before proposing (etcd's v3rpc/key.go): no state needed.

`check_range` refuses an empty key and unknown sort options. `check_txn(req, max_txn_ops)`
applies etcd's max-ops rule (nested txns count against what is left of the budget), key
presence, Put's value/lease-provided rules, and the duplicate-key rule (per branch,
recursively: two puts of one key, or a put inside a delete range of the same branch; a key put
in both then and else of a nested txn is fine).
"""

from __future__ import annotations

from collections.abc import Iterable

from api.etcdserverpb import rpc_pb2
from engine import errors

MAX_TXN_OPS_DEFAULT = 128


def check_put(req: rpc_pb2.PutRequest) -> None:
    if not req.key:
        raise errors.EmptyKeyError()
    if req.ignore_value and req.value:
        raise errors.ValueProvidedError()
    if req.ignore_lease and req.lease:
        raise errors.LeaseProvidedError()


_SORT_ORDERS = range(0, 3)
_SORT_TARGETS = range(0, 5)


def check_range(req: rpc_pb2.RangeRequest) -> None:
    if not req.key:
        raise errors.EmptyKeyError()
    if req.sort_order not in _SORT_ORDERS or req.sort_target not in _SORT_TARGETS:
        raise errors.InvalidSortOptionError()


def check_delete(req: rpc_pb2.DeleteRangeRequest) -> None:
    if not req.key:
        raise errors.EmptyKeyError()


def check_txn(req: rpc_pb2.TxnRequest, max_txn_ops: int = MAX_TXN_OPS_DEFAULT) -> None:
    _check_txn_ops(req, max_txn_ops)
    _check_intervals(req.success)
    _check_intervals(req.failure)


def _check_txn_ops(req: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    opc = max(len(req.compare), len(req.success), len(req.failure))
    if opc > max_txn_ops:
        raise errors.TooManyOpsError()
    for c in req.compare:
        if not c.key:
            raise errors.EmptyKeyError()
    for op in list(req.success) + list(req.failure):
        _check_op(op, max_txn_ops - opc)


def _check_op(op: rpc_pb2.RequestOp, max_txn_ops: int) -> None:
    which = op.WhichOneof("request")
    if which == "request_range":
        check_range(op.request_range)
    elif which == "request_put":
        check_put(op.request_put)
    elif which == "request_delete_range":
        check_delete(op.request_delete_range)
    elif which == "request_txn":
        _check_txn_ops(op.request_txn, max_txn_ops)
    else:
        raise errors.KeyNotFoundError()


# A delete range as etcd's interval tree sees it: [begin, end); a single key k is [k, k+'\0').
Interval = tuple[bytes, bytes]


def _intersects(dels: Iterable[Interval], key: bytes) -> bool:
    return any(b <= key < e for b, e in dels)


def _check_intervals(ops: Iterable[rpc_pb2.RequestOp]) -> tuple[set[bytes], list[Interval]]:
    ops = list(ops)
    dels: list[Interval] = []
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            # etcd builds [key, range_end) even for range_end '\0', which then selects nothing.
            dels.append((d.key, d.range_end) if d.range_end else (d.key, d.key + b"\x00"))
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _check_intervals(op.request_txn.success)
        puts_else, dels_else = _check_intervals(op.request_txn.failure)
        for k in puts_then:
            if k in puts or _intersects(dels, k):
                raise errors.DuplicateKeyError()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or _intersects(dels, k):
                raise errors.DuplicateKeyError()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or _intersects(dels, k):
            raise errors.DuplicateKeyError()
        puts.add(k)
    return puts, dels
