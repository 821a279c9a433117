"""The v3lockpb.Lock gRPC service, as etcd's v3lock does it with concurrency.Mutex.

Lock(name, lease): the waiter's key is "<name>/<lease in hex>", put with the lease if it does
not exist yet (a Txn, so a retried Lock of the same session reuses its key). The lock is held
by the key under "<name>/" with the lowest create revision; a waiter watches the deletion of
the newest key created before its own, again and again, until none is left. Then it checks its
own key still exists (its lease may have expired meanwhile: "mutex: session is expired") and
answers with that read's header. The key's create revision is the fencing token: guard writes
with a Txn compare on it. A Lock that is cancelled while waiting deletes its key.
Lease 0 means no session: like etcd (which opens a session), a lease of 60 s is granted.
Unlock(key) deletes the key.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from api.etcdserverpb import rpc_pb2
from api.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from server.local_kv import LocalKV, prefix_end
from server.service_errors import SessionExpiredError, abort_as_client

log = logging.getLogger(__name__)

SESSION_TTL_S = 60  # concurrency.NewSession's default TTL


def session_key(prefix: bytes, lease_id: int) -> bytes:
    """concurrency's "%s%x" of the prefix and the lease ID."""
    return prefix + format(lease_id, "x").encode()


def _put_if_absent(key: bytes, value: bytes, lease_id: int, prefix: bytes) -> rpc_pb2.TxnRequest:
    """If key is new: put it and read the first-created key of prefix; else read key and that."""
    owner = rpc_pb2.RequestOp(
        request_range=rpc_pb2.RangeRequest(
            key=prefix,
            range_end=prefix_end(prefix),
            sort_target=rpc_pb2.RangeRequest.CREATE,
            sort_order=rpc_pb2.RangeRequest.ASCEND,
            limit=1,
        )
    )
    return rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                key=key,
                target=rpc_pb2.Compare.CREATE,
                result=rpc_pb2.Compare.EQUAL,
                create_revision=0,
            )
        ],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease_id)),
            owner,
        ],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key)), owner],
    )


class LockService(v3lock_pb2_grpc.LockServicer):
    def __init__(self, node: Any, grant_session: Any) -> None:
        """`grant_session(ttl_s)` grants a lease and returns its ID (the Lease service's)."""
        self._kv = LocalKV(node)
        self._grant_session = grant_session

    async def Lock(self, request: v3lock_pb2.LockRequest, context: Any) -> v3lock_pb2.LockResponse:
        try:
            return await self.lock(request.name, request.lease)
        except Exception as exc:
            await abort_as_client(context, exc)

    async def Unlock(
        self, request: v3lock_pb2.UnlockRequest, context: Any
    ) -> v3lock_pb2.UnlockResponse:
        try:
            response = await self._kv.delete(request.key)
            return v3lock_pb2.UnlockResponse(header=response.header)
        except Exception as exc:
            await abort_as_client(context, exc)

    async def lock(self, name: bytes, lease_id: int) -> v3lock_pb2.LockResponse:
        if lease_id == 0:
            lease_id = await self._grant_session(SESSION_TTL_S)
        prefix = name + b"/"
        key = session_key(prefix, lease_id)
        try:
            return await self._acquire(key, lease_id, prefix)
        except BaseException:
            # Cancelled or failed on the way, even while the acquiring Txn was in flight: give
            # the place up, or it would block every later waiter until the lease expires
            # (etcd's Mutex.Lock unlocks too).
            await asyncio.shield(self._release(key))
            raise

    async def _acquire(self, key: bytes, lease_id: int, prefix: bytes) -> v3lock_pb2.LockResponse:
        response = await self._kv.txn(_put_if_absent(key, b"", lease_id, prefix))
        if response.succeeded:
            my_revision = response.header.revision
        else:
            my_revision = response.responses[0].response_range.kvs[0].create_revision
        owner = response.responses[1].response_range.kvs
        if not owner or owner[0].create_revision == my_revision:
            return v3lock_pb2.LockResponse(header=response.header, key=key)
        await self._kv.wait_deletes(prefix, my_revision - 1)
        mine = await self._kv.get(key)
        if not mine.kvs:
            raise SessionExpiredError()
        return v3lock_pb2.LockResponse(header=mine.header, key=key)

    async def _release(self, key: bytes) -> None:
        try:
            await self._kv.delete(key)
        except Exception as exc:
            # Best effort: the lease's expiry removes the key anyway.
            log.warning("release of lock key %r after a failed lock failed: %s", key, exc)
