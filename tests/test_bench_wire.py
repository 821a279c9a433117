"""The client's hand-built request bytes equal protobuf's own serialization, and the
benchmark's keys equal etcd benchmark's (Go binary.PutVarint into a zeroed buffer)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from api.etcdserverpb import rpc_pb2 as pb
from bench.load import expected_events
from bench.workloads import (
    LoadSpec,
    MixedTxnRequests,
    TxnPutRequests,
    benchmark_key,
    split,
)
from client import wire
from client.common import ClientError, parse_endpoints, prefix_end


@given(st.binary(max_size=300), st.binary(max_size=3000), st.integers(-(2**63), 2**63 - 1))
def test_put_request_bytes(key: bytes, value: bytes, lease: int) -> None:
    """put_request == PutRequest(...).SerializeToString() for any key, value and lease."""
    want = pb.PutRequest(key=key, value=value, lease=lease).SerializeToString()
    assert wire.put_request(key, value, lease) == want


@given(st.binary(max_size=100), st.binary(max_size=100), st.booleans(), st.integers(0, 10**6))
def test_range_request_bytes(key: bytes, end: bytes, serializable: bool, limit: int) -> None:
    want = pb.RangeRequest(
        key=key, range_end=end, serializable=serializable, limit=limit
    ).SerializeToString()
    assert wire.range_request(key, end, serializable=serializable, limit=limit) == want


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=40)), max_size=8))
def test_txn_of_puts_bytes(pairs: list[tuple[bytes, bytes]]) -> None:
    ops = [pb.RequestOp(request_put=pb.PutRequest(key=k, value=v)) for k, v in pairs]
    want = pb.TxnRequest(success=ops).SerializeToString()
    assert wire.txn_request([wire.op_put(wire.put_request(k, v)) for k, v in pairs]) == want


def test_txn_with_a_range_op_bytes() -> None:
    """A read txn (even of an empty RangeRequest) encodes like protobuf's."""
    for rng in (pb.RangeRequest(), pb.RangeRequest(key=b"a", range_end=b"b", serializable=True)):
        want = pb.TxnRequest(success=[pb.RequestOp(request_range=rng)]).SerializeToString()
        got = wire.txn_request([wire.op_range(rng.SerializeToString())])
        assert got == want
        assert pb.TxnRequest.FromString(got).success[0].WhichOneof("request") == "request_range"


def test_benchmark_keys_are_etcds() -> None:
    """Zig-zag varint into key_size zeroed bytes, truncated when the key is shorter."""
    assert benchmark_key(0, 8) == bytes(8)
    assert benchmark_key(1, 8) == b"\x02" + bytes(7)
    assert benchmark_key(64, 4) == b"\x80\x01\x00\x00"
    assert benchmark_key(10**6, 2) == wire.varint(2 * 10**6)[:2]


def test_txn_put_keys_are_distinct_and_mixed_ratio_holds() -> None:
    """txn-put never repeats a key in one txn (etcd would refuse it); txn-mixed reads with
    probability rw/(rw+1). Seeded."""
    seed = 7
    spec = LoadSpec("txn-put", ("x:1",), key_space_size=5, txn_ops=4, sequential_keys=False)
    txns = TxnPutRequests(spec, 0, random.Random(seed))
    for _ in range(200):
        keys = [op.request_put.key for op in pb.TxnRequest.FromString(txns.next()).success]
        assert len(keys) == 4 == len(set(keys)), f"seed {seed}"
    mixed = MixedTxnRequests(LoadSpec("txn-mixed", ("x:1",), rw_ratio=3.0), 0, random.Random(seed))
    reads = sum(mixed.next()[0] for _ in range(4000))
    assert 2800 < reads < 3200, f"seed {seed}: {reads} reads of 4000"


def test_split_and_watch_plan() -> None:
    """Shares add up to the total; the expected event count follows the watcher layout."""
    for total, parts in ((10, 3), (2, 4), (0, 2)):
        assert sum(split(total, parts, i) for i in range(parts)) == total
    spec = LoadSpec(
        "watch", ("x:1",), streams=3, watchers_per_stream=2, watched_key_total=4, put_total=10
    )
    # keys 0..3 get 3,3,2,2 puts; watchers (stream*2+w) % 4 -> keys 0,1,2,3,0,1
    assert expected_events(spec) == 3 + 3 + 2 + 2 + 3 + 3


def test_endpoints_and_prefix_end() -> None:
    assert parse_endpoints("http://127.0.0.1:2379, 10.0.0.1:1") == ["127.0.0.1:2379", "10.0.0.1:1"]
    for bad in ("", "https://h:1", "nohost"):
        try:
            parse_endpoints(bad)
        except ClientError:
            continue
        raise AssertionError(f"{bad!r} accepted")
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"
