"""Typed errors of the engine. server/ maps each to etcd's gRPC code and exact message.

The text of each error is etcd's own message (without the "etcdserver: " prefix the server adds
for the wire) so logs read the same as etcd's.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on bad input or state (never on programmer error)."""


class CompactedError(EngineError):
    def __init__(self, compact_revision: int = 0) -> None:
        super().__init__("mvcc: required revision has been compacted")
        self.compact_revision = compact_revision


class FutureRevisionError(EngineError):
    def __init__(self) -> None:
        super().__init__("mvcc: required revision is a future revision")


class KeyNotFoundError(EngineError):
    def __init__(self) -> None:
        super().__init__("key not found")


class LeaseNotFoundError(EngineError):
    def __init__(self) -> None:
        super().__init__("requested lease not found")


class LeaseExistsError(EngineError):
    def __init__(self) -> None:
        super().__init__("lease already exists")


class NoSpaceError(EngineError):
    def __init__(self) -> None:
        super().__init__("mvcc: database space exceeded")


class TooManyOpsError(EngineError):
    def __init__(self) -> None:
        super().__init__("too many operations in txn request")


class DuplicateKeyError(EngineError):
    def __init__(self) -> None:
        super().__init__("duplicate key given in txn request")


class EmptyKeyError(EngineError):
    def __init__(self) -> None:
        super().__init__("key is not provided")


class ValueProvidedError(EngineError):
    def __init__(self) -> None:
        super().__init__("value is provided")


class LeaseProvidedError(EngineError):
    def __init__(self) -> None:
        super().__init__("lease is provided")


class InvalidSortOptionError(EngineError):
    def __init__(self) -> None:
        super().__init__("invalid sort option")
