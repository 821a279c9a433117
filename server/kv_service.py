"""etcdserverpb.KV over grpc.aio: a thin translator from RPCs to the node.

Theory of operation: each handler validates the request as etcd's v3rpc layer does (so bad
input gets etcd's exact error before anything is proposed), then either proposes it through
Raft (writes: the request protobuf goes into InternalRequest as is) or reads the engine:
Range on the loop, a read-only Txn on the storage thread (no Raft, no WAL); linearizable reads
wait for a read barrier first, serializable ones do not.
"""

from __future__ import annotations

from typing import Any

from api.etcdserverpb import rpc_pb2_grpc
from engine import validate

from . import errors
from .applier import txn_has_put, txn_is_read_only
from .node import Node


def _fill(node: Node, header: Any) -> None:
    header.cluster_id = node.cluster_id
    header.member_id = node.member_id
    header.raft_term = node.term


class KVService(rpc_pb2_grpc.KVServicer):  # type: ignore[misc]
    def __init__(self, node: Node) -> None:
        self.node = node
        self.max_txn_ops = node.config.max_txn_ops

    async def Range(self, request: Any, context: Any) -> Any:
        try:
            validate.check_range(request)
            if not request.serializable:
                await self.node.read_barrier()
            response = self.node.store.range(request)
        except Exception as exc:
            await errors.abort(context, exc)
        _fill(self.node, response.header)
        return response

    async def Put(self, request: Any, context: Any) -> Any:
        try:
            validate.check_put(request)
            await self.node.check_quota(request)
            return await self.node.propose_op("put", request)
        except Exception as exc:
            await errors.abort(context, exc)

    async def DeleteRange(self, request: Any, context: Any) -> Any:
        try:
            validate.check_delete(request)
            return await self.node.propose_op("delete_range", request)
        except Exception as exc:
            await errors.abort(context, exc)

    async def Txn(self, request: Any, context: Any) -> Any:
        try:
            validate.check_txn(request, self.max_txn_ops)
            if txn_is_read_only(request):
                if not _serializable(request):
                    await self.node.read_barrier()
                response = await self.node.txn_read(request)
                _fill(self.node, response.header)
                return response
            if txn_has_put(request):
                await self.node.check_quota(request)
            return await self.node.propose_op("txn", request)
        except Exception as exc:
            await errors.abort(context, exc)

    async def Compact(self, request: Any, context: Any) -> Any:
        try:
            response = await self.node.propose_op("compaction", request)
            if request.physical:
                await self.node.wait_compaction()
            return response
        except Exception as exc:
            await errors.abort(context, exc)


def _serializable(txn: Any) -> bool:
    """A read-only txn is serializable only if every range in it is (etcd's isTxnSerializable)."""
    for op in (*txn.success, *txn.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range" and not op.request_range.serializable:
            return False
        if kind == "request_txn" and not _serializable(op.request_txn):
            return False
    return True


def add_to_server(grpc_server: Any, node: Node) -> None:
    rpc_pb2_grpc.add_KVServicer_to_server(KVService(node), grpc_server)
