"""The etcdserverpb.Lease gRPC service.

Grant and Revoke go through Raft (`node.propose`); KeepAlive and TimeToLive are answered by
the lessor of the leader and are no Raft entries, as in etcd. A grant with ID 0 gets an ID
from etcd's request-ID scheme (member bits, then a millisecond-seeded counter), chosen before
the proposal so every member applies the same one. The minimum TTL is applied here, before
the proposal, so the TTL in the log is the effective one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from api.etcdserverpb import internal_pb2, rpc_pb2, rpc_pb2_grpc
from engine.errors import LeaseNotFoundError
from server.errors import NoLeaderError, NotLeaderError
from server.lessor import FOREVER_S, LEASE_TTL_MAX_S, Lessor
from server.service_errors import LeaseTTLTooLargeError, abort

_SUFFIX_BITS = 48
_TIME_BITS = 40
_COUNT_BITS = 8


class IdGenerator:
    """etcd's idutil.Generator: the top 16 bits are the member's, the low 48 a counter that
    starts at the current Unix time in ms shifted left by 8, so restarts do not repeat IDs."""

    def __init__(self, member_id: int, wall_clock: Callable[[], float] = time.time) -> None:
        self._prefix = (member_id & 0xFFFF) << _SUFFIX_BITS
        now_ms = int(wall_clock() * 1000)
        self._suffix = (now_ms & ((1 << _TIME_BITS) - 1)) << _COUNT_BITS

    def next(self) -> int:
        self._suffix += 1
        return self._prefix | (self._suffix & ((1 << _SUFFIX_BITS) - 1))


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, node: Any, lessor: Lessor, *, min_ttl_s: int, ids: IdGenerator) -> None:
        self._node = node
        self._lessor = lessor
        self._min_ttl_s = min_ttl_s
        self._ids = ids

    async def LeaseGrant(
        self, request: rpc_pb2.LeaseGrantRequest, context: Any
    ) -> rpc_pb2.LeaseGrantResponse:
        try:
            return await self.grant(request.ID, request.TTL)
        except Exception as exc:
            await abort(context, exc)

    async def grant(self, lease_id: int, ttl_s: int) -> rpc_pb2.LeaseGrantResponse:
        if ttl_s > LEASE_TTL_MAX_S:
            raise LeaseTTLTooLargeError()
        ttl_s = max(ttl_s, self._min_ttl_s)
        if lease_id == 0:
            lease_id = self._ids.next() & ((1 << 63) - 1)
        grant = rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=ttl_s)
        await self._node.check_quota(grant)  # etcd refuses grants too once space runs out
        response: rpc_pb2.LeaseGrantResponse = await self._node.propose(
            internal_pb2.InternalRequest(lease_grant=grant)
        )
        self._lessor.granted(lease_id, ttl_s)
        response.ID = lease_id
        response.TTL = ttl_s
        return response

    async def LeaseRevoke(
        self, request: rpc_pb2.LeaseRevokeRequest, context: Any
    ) -> rpc_pb2.LeaseRevokeResponse:
        try:
            revoke = rpc_pb2.LeaseRevokeRequest(ID=request.ID)
            response: rpc_pb2.LeaseRevokeResponse = await self._node.propose(
                internal_pb2.InternalRequest(lease_revoke=revoke)
            )
            self._lessor.forget(request.ID)
            return response
        except Exception as exc:
            await abort(context, exc)

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest], context: Any
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        async for request in request_iterator:
            try:
                self._require_primary()
            except Exception as exc:
                await abort(context, exc)
            try:
                ttl_s = await self._lessor.keepalive(request.ID)
            except Exception as exc:
                await abort(context, exc)
            yield rpc_pb2.LeaseKeepAliveResponse(
                header=self._node.header(), ID=request.ID, TTL=ttl_s
            )

    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Any
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        try:
            self._require_primary()
            return self.time_to_live(request.ID, keys=request.keys)
        except Exception as exc:
            await abort(context, exc)

    def time_to_live(self, lease_id: int, *, keys: bool) -> rpc_pb2.LeaseTimeToLiveResponse:
        header = self._node.header()
        lease = self._lessor.lookup(lease_id)
        remaining_s = self._lessor.remaining_s(lease_id)
        if lease is None or remaining_s is None:
            return rpc_pb2.LeaseTimeToLiveResponse(header=header, ID=lease_id, TTL=-1)
        # etcd truncates the remaining duration to whole seconds.
        ttl_s = lease.ttl_s if remaining_s == FOREVER_S else int(remaining_s)
        response = rpc_pb2.LeaseTimeToLiveResponse(
            header=header, ID=lease_id, TTL=ttl_s, grantedTTL=lease.ttl_s
        )
        if keys:
            try:
                _, attached = self._node.store.lease_ttl_info(lease_id)
            except LeaseNotFoundError:  # revoked since the lessor's answer
                return rpc_pb2.LeaseTimeToLiveResponse(header=header, ID=lease_id, TTL=-1)
            response.keys.extend(sorted(attached))
        return response

    async def LeaseLeases(
        self, request: rpc_pb2.LeaseLeasesRequest, context: Any
    ) -> rpc_pb2.LeaseLeasesResponse:
        try:
            leases = [rpc_pb2.LeaseStatus(ID=lease_id) for lease_id, _ in self._node.store.leases()]
            return rpc_pb2.LeaseLeasesResponse(header=self._node.header(), leases=leases)
        except Exception as exc:
            await abort(context, exc)

    def _require_primary(self) -> None:
        """KeepAlive and TimeToLive are the leader's to answer (etcd forwards them to it)."""
        if self._node.is_leader:
            return
        if not self._node.leader_id:
            raise NoLeaderError()
        raise NotLeaderError()
