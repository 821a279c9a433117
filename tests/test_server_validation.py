"""Request validation, the error table and member/cluster IDs, checked against etcd 3.4."""

from __future__ import annotations

import grpc
import pytest

from api.etcdserverpb import rpc_pb2
from engine import errors as engine_errors
from engine import validate
from server import errors
from server.ids import cluster_id, member_id


def put_op(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"v"))


def del_op(key: bytes, end: bytes = b"") -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(
        request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=end)
    )


def txn_op(success: list, failure: list) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=success, failure=failure))


def test_ids_match_etcd() -> None:
    """IDs equal what etcd 3.4.23 reported for the same flags (measured: `etcd --name n1
    --initial-advertise-peer-urls http://127.0.0.1:36748 --initial-cluster-token tok`)."""
    m = member_id(["http://127.0.0.1:36748"], "tok")
    assert m == 9355243370050740945
    assert cluster_id([m]) == 484053208127166026


def test_error_table_exact_texts() -> None:
    """Engine errors are mapped by class name to etcd's code and exact text."""

    class CompactedError(Exception):
        pass

    class LeaseNotFoundError(Exception):
        pass

    assert errors.to_grpc_status(CompactedError("x")) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision has been compacted",
    )
    assert errors.to_grpc_status(LeaseNotFoundError()) == (
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: requested lease not found",
    )
    assert errors.to_grpc_status(errors.NoLeaderError()) == (
        grpc.StatusCode.UNAVAILABLE,
        "etcdserver: no leader",
    )
    assert errors.to_grpc_status(errors.RequestTooLargeError()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: request is too large",
    )
    assert errors.to_grpc_status(ValueError("boom")) == (grpc.StatusCode.UNKNOWN, "boom")


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (rpc_pb2.PutRequest(key=b""), engine_errors.EmptyKeyError),
        (
            rpc_pb2.PutRequest(key=b"k", value=b"v", ignore_value=True),
            engine_errors.ValueProvidedError,
        ),
        (
            rpc_pb2.PutRequest(key=b"k", lease=5, ignore_lease=True),
            engine_errors.LeaseProvidedError,
        ),
    ],
)
def test_put_checks(request_: rpc_pb2.PutRequest, error: type) -> None:
    with pytest.raises(error):
        validate.check_put(request_)


def test_put_check_passes_valid() -> None:
    validate.check_put(rpc_pb2.PutRequest(key=b"k", ignore_value=True, ignore_lease=True))


def test_range_checks() -> None:
    with pytest.raises(engine_errors.EmptyKeyError):
        validate.check_range(rpc_pb2.RangeRequest())
    with pytest.raises(engine_errors.InvalidSortOptionError):
        validate.check_range(rpc_pb2.RangeRequest(key=b"a", sort_order=7))
    validate.check_range(rpc_pb2.RangeRequest(key=b"a", sort_order=2, sort_target=4))


def test_txn_too_many_ops() -> None:
    txn = rpc_pb2.TxnRequest(success=[put_op(b"k%d" % i) for i in range(3)])
    validate.check_txn(txn, 3)
    with pytest.raises(engine_errors.TooManyOpsError):
        validate.check_txn(txn, 2)


def test_txn_empty_compare_key() -> None:
    txn = rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"")])
    with pytest.raises(engine_errors.EmptyKeyError):
        validate.check_txn(txn, 128)


@pytest.mark.parametrize(
    "ops",
    [
        [put_op(b"a"), put_op(b"a")],
        [del_op(b"a", b"c"), put_op(b"b")],
        [txn_op([put_op(b"a")], []), put_op(b"a")],
        [txn_op([del_op(b"a")], []), put_op(b"a")],
        [put_op(b"a"), txn_op([], [put_op(b"a")])],
    ],
)
def test_txn_duplicate_keys(ops: list) -> None:
    with pytest.raises(engine_errors.DuplicateKeyError):
        validate.check_txn(rpc_pb2.TxnRequest(success=ops), 128)


@pytest.mark.parametrize(
    "ops",
    [
        [put_op(b"a"), put_op(b"b")],
        [del_op(b"a", b"c"), del_op(b"b", b"d")],
        [del_op(b"a", b"c"), put_op(b"c")],
        [txn_op([put_op(b"a")], [put_op(b"a")])],
        # etcd 3.4 compares range ends literally: a from-key delete covers nothing there.
        [del_op(b"a", b"\x00"), put_op(b"zzz")],
    ],
)
def test_txn_allowed_overlaps(ops: list) -> None:
    validate.check_txn(rpc_pb2.TxnRequest(success=ops), 128)


@pytest.mark.parametrize("request_id", [1, 300, 2**63 + 12345, 2**64 - 1])
def test_hand_framed_entry_decodes_as_internal_request(request_id: int) -> None:
    """Node.propose_op frames the request without copying it; the bytes must decode to the
    same InternalRequest that propose() would have encoded."""
    from api.etcdserverpb import internal_pb2
    from server import entry

    put = rpc_pb2.PutRequest(key=b"k" * 300, value=b"v" * 70_000, lease=5, prev_kv=True)
    data = entry.frame("put", request_id, put.SerializeToString())
    expected = internal_pb2.InternalRequest(put=put)
    expected.header.ID = request_id
    assert internal_pb2.InternalRequest.FromString(data) == expected


def test_nested_txn_counts_against_the_remaining_budget() -> None:
    """etcd's checkRequestOp gives a nested txn max-txn-ops minus the outer op count: an outer
    txn of 2 ops holding a nested txn of 2 puts exceeds a budget of 3 (2 + 2 > 3)."""
    nested = txn_op([put_op(b"a"), put_op(b"b")], [])
    txn = rpc_pb2.TxnRequest(success=[nested, put_op(b"c")])
    validate.check_txn(txn, 4)
    with pytest.raises(engine_errors.TooManyOpsError):
        validate.check_txn(txn, 3)


def test_empty_request_op_is_key_not_found() -> None:
    """An empty RequestOp in a txn is refused as etcd 3.4 refuses it ("key not found")."""
    with pytest.raises(engine_errors.KeyNotFoundError):
        validate.check_txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp()]), 128)


def test_validation_errors_map_to_etcd_text() -> None:
    """Every error the validators raise reaches the client with etcd's code and text."""
    cases = {
        engine_errors.EmptyKeyError(): "etcdserver: key is not provided",
        engine_errors.InvalidSortOptionError(): "etcdserver: invalid sort option",
        engine_errors.TooManyOpsError(): "etcdserver: too many operations in txn request",
        engine_errors.DuplicateKeyError(): "etcdserver: duplicate key given in txn request",
    }
    for exc, text in cases.items():
        assert errors.to_grpc_status(exc) == (grpc.StatusCode.INVALID_ARGUMENT, text)
