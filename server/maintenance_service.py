"""etcdserverpb.Maintenance: Status, Alarm, Defragment, Hash, HashKV, Snapshot, MoveLeader.

Alarm requests go through Raft (every member must agree on the alarms, which gate what the
applier accepts); the others read local state. Defragment and the snapshot copy run off the
event loop: defragment on the storage thread (it rewrites the engine, so it must be ordered
with the writes), the snapshot copy in a worker thread over one consistent read transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from typing import Any

from api.etcdserverpb import internal_pb2, rpc_pb2, rpc_pb2_grpc
from snapshot import backend

from . import errors
from .node import Node

VERSION = "3.4.23"
SNAPSHOT_CHUNK_BYTES = 32 * 1024


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):  # type: ignore[misc]
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Status(self, request: Any, context: Any) -> Any:
        node = self.node
        response = rpc_pb2.StatusResponse(
            header=node.header(),
            version=VERSION,
            dbSize=node.store.size_bytes(),
            dbSizeInUse=node.store.size_in_use_bytes(),
            leader=node.leader_id,
            raftIndex=node.commit_index,
            raftTerm=node.term,
            raftAppliedIndex=node.applied_index,
        )
        if not node.leader_id:
            response.errors.append(errors.NoLeaderError().text)
        for member, alarm in sorted(node.applier.alarms):
            name = rpc_pb2.AlarmType.Name(alarm)
            response.errors.append(f"memberID:{member} alarm:{name} ")
        return response

    async def Alarm(self, request: Any, context: Any) -> Any:
        try:
            return await self.node.propose(internal_pb2.InternalRequest(alarm=request))
        except Exception as exc:
            await errors.abort(context, exc)

    async def Defragment(self, request: Any, context: Any) -> Any:
        try:
            await self.node.defragment()
        except Exception as exc:
            await errors.abort(context, exc)
        return rpc_pb2.DefragmentResponse()  # etcd answers with no header

    async def Hash(self, request: Any, context: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            async with self.node.backend_swap_lock:
                value = await loop.run_in_executor(None, self.node.store.hash)
        except Exception as exc:
            await errors.abort(context, exc)
        return rpc_pb2.HashResponse(header=self.node.header(), hash=value & 0xFFFFFFFF)

    async def HashKV(self, request: Any, context: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            async with self.node.backend_swap_lock:
                value, compact_rev, rev = await loop.run_in_executor(
                    None, self.node.store.hash_kv, request.revision
                )
        except Exception as exc:
            await errors.abort(context, exc)
        return rpc_pb2.HashKVResponse(
            header=self.node.header(rev), hash=value & 0xFFFFFFFF, compact_revision=compact_rev
        )

    async def MoveLeader(self, request: Any, context: Any) -> Any:
        node = self.node
        try:
            if not node.is_leader:
                raise errors.NotLeaderError()
            if request.targetID not in {m[0] for m in node.identity.members}:
                raise errors.BadLeaderTransfereeError()
            if request.targetID != node.member_id:
                # Transfer to another member needs the peer transport (multi-member clusters).
                raise errors.NotCapableError()
        except Exception as exc:
            await errors.abort(context, exc)
        return rpc_pb2.MoveLeaderResponse()  # etcd answers with no header

    async def Snapshot(self, request: Any, context: Any) -> Any:
        loop = asyncio.get_running_loop()
        header = self.node.header()
        async with self.node.backend_swap_lock:
            spool = await loop.run_in_executor(None, self._copy_backend)
        try:
            total = spool.seek(0, 2)
            spool.seek(0)
            digest = hashlib.sha256()
            sent = 0
            while True:
                blob = await loop.run_in_executor(None, spool.read, SNAPSHOT_CHUNK_BYTES)
                if not blob:
                    break
                sent += len(blob)
                digest.update(blob)
                yield rpc_pb2.SnapshotResponse(
                    header=header, remaining_bytes=total - sent, blob=blob
                )
            yield rpc_pb2.SnapshotResponse(header=header, remaining_bytes=0, blob=digest.digest())
        finally:
            spool.close()

    def _copy_backend(self) -> Any:
        # A consistent copy first (one read transaction, off the loop), so the stream's size
        # is known up front for remaining_bytes, as etcd reports it.
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Snapshot()
        for chunk in backend.stream(self.node.store.env, trailer=False):
            spool.write(chunk)
        return spool


def add_to_server(grpc_server: Any, node: Node) -> None:
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(node), grpc_server)
