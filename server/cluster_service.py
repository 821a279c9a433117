"""etcdserverpb.Cluster: the member list, and etcd's answers to membership changes.

A standalone node has no peer transport yet, so it cannot add, update or promote members:
those answer "etcdserver: not capable" after the same input checks etcd makes first (bad or
already used peer URLs, unknown member IDs). Removing the only voter is refused as etcd's
strict reconfiguration check refuses it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from . import errors
from .node import Node


def _valid_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https", "unix", "unixs") and bool(parts.netloc)
    except ValueError:
        return False


class ClusterService(rpc_pb2_grpc.ClusterServicer):  # type: ignore[misc]
    def __init__(self, node: Node) -> None:
        self.node = node

    def _members(self) -> list[Any]:
        node = self.node
        members = []
        for member_id, name, peer_urls in node.identity.members:
            member = rpc_pb2.Member(ID=member_id, name=name, peerURLs=list(peer_urls))
            if member_id == node.member_id:
                member.clientURLs.extend(node.config.advertise_client_urls)
            members.append(member)
        return members

    def _ids(self) -> set[int]:
        return {m[0] for m in self.node.identity.members}

    async def MemberList(self, request: Any, context: Any) -> Any:
        # etcd's cluster server fills no revision in its headers.
        header = rpc_pb2.ResponseHeader(
            cluster_id=self.node.cluster_id, member_id=self.node.member_id, raft_term=self.node.term
        )
        return rpc_pb2.MemberListResponse(header=header, members=self._members())

    async def MemberAdd(self, request: Any, context: Any) -> Any:
        try:
            if not request.peerURLs or not all(_valid_url(u) for u in request.peerURLs):
                raise errors.InvalidPeerURLError()
            used = {u for m in self.node.identity.members for u in m[2]}
            if used & set(request.peerURLs):
                raise errors.PeerURLExistError()
            raise errors.NotCapableError()
        except Exception as exc:
            await errors.abort(context, exc)

    async def MemberRemove(self, request: Any, context: Any) -> Any:
        try:
            if request.ID not in self._ids():
                raise errors.MemberNotFoundError()
            if len(self._ids()) == 1:
                raise errors.NotEnoughStartedError()
            raise errors.NotCapableError()
        except Exception as exc:
            await errors.abort(context, exc)

    async def MemberUpdate(self, request: Any, context: Any) -> Any:
        try:
            if not request.peerURLs or not all(_valid_url(u) for u in request.peerURLs):
                raise errors.InvalidPeerURLError()
            if request.ID not in self._ids():
                raise errors.MemberNotFoundError()
            raise errors.NotCapableError()
        except Exception as exc:
            await errors.abort(context, exc)

    async def MemberPromote(self, request: Any, context: Any) -> Any:
        try:
            if request.ID not in self._ids():
                raise errors.MemberNotFoundError()
            raise errors.MemberNotLearnerError()
        except Exception as exc:
            await errors.abort(context, exc)


def add_to_server(grpc_server: Any, node: Node) -> None:
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService(node), grpc_server)
