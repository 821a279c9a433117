"""The v3electionpb.Election gRPC service, as etcd's v3election does it with
concurrency.Election.

Campaign(name, lease, value): the candidate's key is "<name>/<lease in hex>", put with the
lease unless it exists (then its value is proclaimed if it differs); the candidate leads once
every key under "<name>/" created before its own is deleted. Leader is the key with the lowest
create revision. Proclaim and Resign act only if the leader key still has the create revision
the client holds (else Proclaim says "election: not leader", Resign does nothing). Observe
streams the leader's value: the current leader's puts until its key is deleted, then the next
leader, and so on. A Campaign cancelled while waiting resigns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from api.etcdserverpb import rpc_pb2
from api.mvccpb import kv_pb2
from api.v3electionpb import v3election_pb2, v3election_pb2_grpc
from server.local_kv import HubWatch, LocalKV, compacted_revision, prefix_end
from server.lock_service import SESSION_TTL_S, _put_if_absent, session_key
from server.service_errors import (
    ElectionNoLeaderError,
    ElectionNotLeaderError,
    MissingLeaderKeyError,
    abort_as_client,
)

log = logging.getLogger(__name__)


def _if_leader(leader: v3election_pb2.LeaderKey, op: rpc_pb2.RequestOp) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                key=leader.key,
                target=rpc_pb2.Compare.CREATE,
                result=rpc_pb2.Compare.EQUAL,
                create_revision=leader.rev,
            )
        ],
        success=[op],
    )


class ElectionService(v3election_pb2_grpc.ElectionServicer):
    def __init__(self, node: Any, grant_session: Any) -> None:
        self._node = node
        self._kv = LocalKV(node)
        self._grant_session = grant_session

    # -- unary RPCs ---------------------------------------------------------------------

    async def Campaign(
        self, request: v3election_pb2.CampaignRequest, context: Any
    ) -> v3election_pb2.CampaignResponse:
        try:
            return await self.campaign(request.name, request.lease, request.value)
        except Exception as exc:
            await abort_as_client(context, exc)

    async def Proclaim(
        self, request: v3election_pb2.ProclaimRequest, context: Any
    ) -> v3election_pb2.ProclaimResponse:
        try:
            if not request.HasField("leader"):
                raise MissingLeaderKeyError()
            header = await self.proclaim(request.leader, request.value)
            return v3election_pb2.ProclaimResponse(header=header)
        except Exception as exc:
            await abort_as_client(context, exc)

    async def Resign(
        self, request: v3election_pb2.ResignRequest, context: Any
    ) -> v3election_pb2.ResignResponse:
        try:
            if not request.HasField("leader"):
                raise MissingLeaderKeyError()
            header = await self.resign(request.leader)
            return v3election_pb2.ResignResponse(header=header)
        except Exception as exc:
            await abort_as_client(context, exc)

    async def Leader(
        self, request: v3election_pb2.LeaderRequest, context: Any
    ) -> v3election_pb2.LeaderResponse:
        try:
            response = await self._kv.first_created(request.name + b"/")
            if not response.kvs:
                raise ElectionNoLeaderError()
            return v3election_pb2.LeaderResponse(header=response.header, kv=response.kvs[0])
        except Exception as exc:
            await abort_as_client(context, exc)

    async def Observe(
        self, request: v3election_pb2.LeaderRequest, context: Any
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        try:
            async for response in self.observe(request.name):
                yield response
        except Exception as exc:
            await abort_as_client(context, exc)

    # -- the election -----------------------------------------------------------------

    async def campaign(
        self, name: bytes, lease_id: int, value: bytes
    ) -> v3election_pb2.CampaignResponse:
        if lease_id == 0:
            lease_id = await self._grant_session(SESSION_TTL_S)
        prefix = name + b"/"
        key = session_key(prefix, lease_id)
        try:
            return await self._campaign(name, key, lease_id, value, prefix)
        except BaseException:
            # Cancelled or failed on the way, even while the Txn that enters the candidate was
            # in flight: withdraw, or every later candidate waits until the lease expires.
            await asyncio.shield(self._withdraw(key))
            raise

    async def _campaign(
        self, name: bytes, key: bytes, lease_id: int, value: bytes, prefix: bytes
    ) -> v3election_pb2.CampaignResponse:
        response = await self._kv.txn(_put_if_absent(key, value, lease_id, prefix))
        leader = v3election_pb2.LeaderKey(
            name=name, key=key, rev=response.header.revision, lease=lease_id
        )
        if not response.succeeded:
            existing = response.responses[0].response_range.kvs[0]
            leader.rev = existing.create_revision
            if existing.value != value:
                await self.proclaim(leader, value)
        await self._kv.wait_deletes(prefix, leader.rev - 1)
        return v3election_pb2.CampaignResponse(header=response.header, leader=leader)

    async def proclaim(
        self, leader: v3election_pb2.LeaderKey, value: bytes
    ) -> rpc_pb2.ResponseHeader:
        put = rpc_pb2.RequestOp(
            request_put=rpc_pb2.PutRequest(key=leader.key, value=value, lease=leader.lease)
        )
        response = await self._kv.txn(_if_leader(leader, put))
        if not response.succeeded:
            raise ElectionNotLeaderError()
        return response.header

    async def resign(self, leader: v3election_pb2.LeaderKey) -> rpc_pb2.ResponseHeader:
        delete = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=leader.key))
        response = await self._kv.txn(_if_leader(leader, delete))
        return response.header

    async def _withdraw(self, key: bytes) -> None:
        try:
            await self._kv.delete(key)
        except Exception as exc:
            # Best effort: the lease's expiry removes the key anyway.
            log.warning("withdrawing candidate %r failed: %s", key, exc)

    async def observe(self, name: bytes) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """concurrency.Election.observe: the leader now, its updates, then the next one."""
        prefix = name + b"/"
        while True:
            current = await self._kv.first_created(prefix)
            if current.kvs:
                header, kv = current.header, current.kvs[0]
            else:
                first = await self._first_put(prefix, current.header.revision)
                if first is None:
                    return  # the watch was compacted away: etcd closes the stream too
                header, kv = first
            yield v3election_pb2.LeaderResponse(header=header, kv=kv)
            async for update in self._updates_until_deleted(kv.key, header.revision + 1):
                yield update

    async def _first_put(
        self, prefix: bytes, revision: int
    ) -> tuple[rpc_pb2.ResponseHeader, kv_pb2.KeyValue] | None:
        """Waits for the first put under `prefix` from `revision` on."""
        watch = HubWatch(self._node, prefix, prefix_end(prefix), revision)
        try:
            while True:
                batch = await watch.next_batch()
                if compacted_revision(batch) is not None:
                    return None
                for event in batch:
                    if event.type == kv_pb2.Event.PUT:
                        return self._node.header(event.kv.mod_revision), event.kv
        finally:
            watch.cancel()

    async def _updates_until_deleted(
        self, key: bytes, revision: int
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        watch = HubWatch(self._node, key, b"", revision)
        try:
            while True:
                batch = await watch.next_batch()
                if compacted_revision(batch) is not None:
                    return  # start over from the current leader
                for event in batch:
                    if event.type == kv_pb2.Event.DELETE:
                        return
                    header = self._node.header(event.kv.mod_revision)
                    yield v3election_pb2.LeaderResponse(header=header, kv=event.kv)
        finally:
            watch.cancel()
