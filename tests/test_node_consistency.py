"""Consistency under concurrent clients, against etcd 3.4.23 and petra (`node_kind`).

- Linearizable reads: one writer puts 1, 2, 3, ... to a register while readers read it. A
  read that starts after put k was acknowledged must return at least k, and no read returns a
  value whose put had not started when the read ended; each reader's revisions never go back.
- Compare-and-swap: several clients increment a counter with Txn(compare mod_revision), retrying
  on failure; the final value equals the number of successful swaps (no lost update, no
  double apply), and the successful swaps' revisions are all distinct.
Times come from one monotonic clock in this process, so the real-time order is well defined.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import grpc

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests import nodes
from tests.nodes import Node

node_kind = nodes.node_kind
node = nodes.node

WRITES = 150
READERS = 3
CAS_CLIENTS = 4
CAS_EACH = 15


@dataclasses.dataclass
class Read:
    started: float
    ended: float
    value: int
    revision: int


def _writer(endpoint: str, acked: list[float], started: list[float]) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for k in range(1, WRITES + 1):
            started.append(time.monotonic())
            kv.Put(rpc_pb2.PutRequest(key=b"reg", value=str(k).encode()), timeout=10)
            acked.append(time.monotonic())


def _reader(endpoint: str, done: threading.Event, reads: list[Read], serializable: bool) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        while not done.is_set():
            t0 = time.monotonic()
            resp = kv.Range(rpc_pb2.RangeRequest(key=b"reg", serializable=serializable), timeout=10)
            t1 = time.monotonic()
            value = int(resp.kvs[0].value) if resp.kvs else 0
            reads.append(Read(t0, t1, value, resp.header.revision))


def test_reads_are_linearizable(node: Node) -> None:
    """Linearizable reads never miss an acknowledged write nor see an unstarted one."""
    acked: list[float] = []  # acked[k - 1]: when put k was acknowledged
    started: list[float] = []
    done = threading.Event()
    per_reader: list[list[Read]] = [[] for _ in range(READERS)]
    readers = [
        threading.Thread(target=_reader, args=(node.endpoint, done, reads, i == 0), daemon=True)
        for i, reads in enumerate(per_reader)
    ]  # reader 0 reads serializable: only its monotonicity is checked
    for t in readers:
        t.start()
    try:
        _writer(node.endpoint, acked, started)
    finally:
        done.set()
        for t in readers:
            t.join(15)
    for i, reads in enumerate(per_reader):
        assert reads, f"reader {i} made no read"
        revisions = [r.revision for r in reads]
        assert revisions == sorted(revisions), f"reader {i}: revision went back"
        if i == 0:
            continue
        for r in reads:
            floor = sum(1 for t in acked if t < r.started)  # puts acknowledged before it began
            ceiling = sum(1 for t in started if t < r.ended)  # puts begun before it ended
            assert floor <= r.value <= ceiling, (
                f"reader {i}: read {r.value} in [{r.started:.4f}, {r.ended:.4f}], "
                f"expected between {floor} and {ceiling}"
            )
    assert sum(len(reads) for reads in per_reader[1:]) >= 20


def _cas_client(endpoint: str, wins: list[int], errors: list[str]) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        done = 0
        attempts = 0
        while done < CAS_EACH and attempts < CAS_EACH * 50:
            attempts += 1
            cur = kv.Range(rpc_pb2.RangeRequest(key=b"counter"), timeout=10)
            value = int(cur.kvs[0].value) if cur.kvs else 0
            mod = cur.kvs[0].mod_revision if cur.kvs else 0
            compare = rpc_pb2.Compare(
                key=b"counter",
                target=rpc_pb2.Compare.MOD,
                result=rpc_pb2.Compare.EQUAL,
                mod_revision=mod,
            )
            put = rpc_pb2.PutRequest(key=b"counter", value=str(value + 1).encode())
            txn = rpc_pb2.TxnRequest(
                compare=[compare], success=[rpc_pb2.RequestOp(request_put=put)]
            )
            resp = kv.Txn(txn, timeout=10)
            if resp.succeeded:
                wins.append(resp.header.revision)
                done += 1
        if done < CAS_EACH:
            errors.append(f"only {done} swaps in {attempts} attempts")


def test_compare_and_swap_counter(node: Node) -> None:
    """Concurrent CAS increments: final value == successful swaps, each at its own revision."""
    wins: list[int] = []
    errors: list[str] = []
    clients = [
        threading.Thread(target=_cas_client, args=(node.endpoint, wins, errors), daemon=True)
        for _ in range(CAS_CLIENTS)
    ]
    for t in clients:
        t.start()
    for t in clients:
        t.join(120)
    assert not errors, errors
    with grpc.insecure_channel(node.endpoint) as ch:
        final = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"counter"), timeout=10)
    assert int(final.kvs[0].value) == len(wins) == CAS_CLIENTS * CAS_EACH
    assert len(set(wins)) == len(wins), "two swaps reported the same revision"
    assert final.kvs[0].version == len(wins)
