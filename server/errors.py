"""THE one table from internal errors to gRPC status codes and etcd's exact messages.

Theory of operation: every package raises its own typed errors (engine.errors.*, the server's
own below). They travel unchanged up to the gRPC handler, which calls `abort(context, exc)`;
this module is the only place that knows the wire text, so clients that match on etcd's exact
message (etcdctl, clientv3, python-etcd3) see what etcd 3.4 would send. Engine errors are
matched by class name so this table does not import the engine (and never goes stale when the
engine adds a base class).
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

_P = "etcdserver: "


class ServerError(Exception):
    """A server-side failure with a fixed etcd text; subclasses set `code` and `text`."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    text: str = ""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.text)


def _error(name: str, code: grpc.StatusCode, text: str) -> type[ServerError]:
    return type(name, (ServerError,), {"code": code, "text": _P + text})


_C = grpc.StatusCode
NoLeaderError = _error("NoLeaderError", _C.UNAVAILABLE, "no leader")
NotLeaderError = _error("NotLeaderError", _C.FAILED_PRECONDITION, "not leader")
LeaderChangedError = _error("LeaderChangedError", _C.UNAVAILABLE, "leader changed")
NotCapableError = _error("NotCapableError", _C.UNAVAILABLE, "not capable")
StoppedError = _error("StoppedError", _C.UNAVAILABLE, "server stopped")
RequestTimeoutError = _error("RequestTimeoutError", _C.UNAVAILABLE, "request timed out")
TooManyRequestsError = _error("TooManyRequestsError", _C.UNKNOWN, "too many requests")
RequestTooLargeError = _error("RequestTooLargeError", _C.INVALID_ARGUMENT, "request is too large")
NoSpaceError = _error("NoSpaceError", _C.RESOURCE_EXHAUSTED, "mvcc: database space exceeded")
CorruptError = _error("CorruptError", _C.DATA_LOSS, "corrupt cluster")
MemberNotFoundError = _error("MemberNotFoundError", _C.NOT_FOUND, "member not found")
MemberExistError = _error("MemberExistError", _C.FAILED_PRECONDITION, "member ID already exist")
PeerURLExistError = _error("PeerURLExistError", _C.FAILED_PRECONDITION, "Peer URLs already exists")
BadLeaderTransfereeError = _error(
    "BadLeaderTransfereeError", _C.FAILED_PRECONDITION, "bad leader transferee"
)
InvalidPeerURLError = _error(
    "InvalidPeerURLError", _C.INVALID_ARGUMENT, "given member URLs are invalid"
)
MemberNotLearnerError = _error(
    "MemberNotLearnerError", _C.FAILED_PRECONDITION, "can only promote a learner member"
)
UnhealthyClusterError = _error("UnhealthyClusterError", _C.UNAVAILABLE, "unhealthy cluster")

# Engine errors by class name (engine.errors.*), with etcd's text and code.
_ENGINE: dict[str, tuple[grpc.StatusCode, str]] = {
    "CompactedError": (_C.OUT_OF_RANGE, "mvcc: required revision has been compacted"),
    "FutureRevisionError": (_C.OUT_OF_RANGE, "mvcc: required revision is a future revision"),
    "KeyNotFoundError": (_C.INVALID_ARGUMENT, "key not found"),
    "LeaseNotFoundError": (_C.NOT_FOUND, "requested lease not found"),
    "LeaseExistsError": (_C.FAILED_PRECONDITION, "lease already exists"),
    "LeaseTTLTooLargeError": (_C.OUT_OF_RANGE, "too large lease TTL"),
    "NoSpaceError": (_C.RESOURCE_EXHAUSTED, "mvcc: database space exceeded"),
    "TooManyOpsError": (_C.INVALID_ARGUMENT, "too many operations in txn request"),
    "DuplicateKeyError": (_C.INVALID_ARGUMENT, "duplicate key given in txn request"),
    "EmptyKeyError": (_C.INVALID_ARGUMENT, "key is not provided"),
    "ValueProvidedError": (_C.INVALID_ARGUMENT, "value is provided"),
    "LeaseProvidedError": (_C.INVALID_ARGUMENT, "lease is provided"),
    "InvalidSortOptionError": (_C.INVALID_ARGUMENT, "invalid sort option"),
}


def to_grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and etcd's exact message for `exc`; unknown errors pass their raw text."""
    if isinstance(exc, ServerError):
        return exc.code, str(exc)
    for cls in type(exc).__mro__:
        hit = _ENGINE.get(cls.__name__)
        if hit is not None:
            return hit[0], _P + hit[1]
    return _C.UNKNOWN, str(exc)


async def abort(context: Any, exc: BaseException) -> NoReturn:
    """End the RPC with the status of `exc` (raises, as grpc.aio's abort does)."""
    code, text = to_grpc_status(exc)
    await context.abort(code, text)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


# 3.4 maps this one to Unknown (a slip in togRPCError); clients match the text.
NotEnoughStartedError = _error(
    "NotEnoughStartedError",
    _C.UNKNOWN,
    "re-configuration failed due to not enough started members",
)
LeaderTransferTimeoutError = _error(
    "LeaderTransferTimeoutError",
    _C.UNAVAILABLE,
    "request timed out, leader transfer took too long",
)
