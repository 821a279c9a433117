"""Errors raised by the services of this package that are not engine or node errors.

Each carries its gRPC code and etcd's exact text, so it needs no row in server/errors.py's
table: `abort` sends these as they are and hands every other exception (engine errors, the
node's NoLeaderError, ...) to that table.
etcd's lock and election helpers run as a client of the server itself, so their errors reach
the caller as Unknown with the raw text.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from server import errors as core_errors


class ServiceError(Exception):
    """An error whose status is fixed: `code` and `message` go to the client unchanged."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    message: str = ""

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)


class LeaseTTLTooLargeError(ServiceError):
    code = grpc.StatusCode.OUT_OF_RANGE
    message = "etcdserver: too large lease TTL"


class ElectionNotLeaderError(ServiceError):
    message = "election: not leader"


class ElectionNoLeaderError(ServiceError):
    message = "election: no leader"


class MissingLeaderKeyError(ServiceError):
    message = '"leader" field must be provided'


class SessionExpiredError(ServiceError):
    message = "mutex: session is expired"


def to_grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status for any exception: ours directly, the rest through server/errors.py."""
    if isinstance(exc, ServiceError):
        return exc.code, exc.message
    return core_errors.to_grpc_status(exc)


async def abort(context: Any, exc: BaseException) -> NoReturn:
    code, text = to_grpc_status(exc)
    await context.abort(code, text)
    raise AssertionError("context.abort returned")  # grpc.aio raises; never reached


async def abort_as_client(context: Any, exc: BaseException) -> NoReturn:
    """`abort` for the lock and election services: the text as `abort` has it, the code
    always Unknown. etcd's v3lock and v3election call the server through clientv3, which turns
    every etcd status it knows into a plain error (rpctypes.EtcdError) that has no gRPC status
    of its own, so their handlers send it on as Unknown ("etcdserver: requested lease not
    found" for a Lock with an unknown lease, where KV.Put says NotFound)."""
    _, text = to_grpc_status(exc)
    await context.abort(grpc.StatusCode.UNKNOWN, text)
    raise AssertionError("context.abort returned")  # grpc.aio raises; never reached
