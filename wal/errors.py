"""Typed errors of the WAL. server/ maps them to its own messages; none is ever retried."""

from __future__ import annotations


class WALError(Exception):
    """Base of every WAL error."""


class LockedError(WALError):
    """Another process (or another WAL object) holds the directory's lock file."""


class ExistsError(WALError):
    """`WAL.create` was given a directory that already exists."""


class NotFoundError(WALError):
    """No WAL (or no segment a snapshot marker needs) exists where one was expected."""


class CorruptionError(WALError):
    """A record that should be durable is damaged: refuse to go on. Names file and offset."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"wal: corrupt record in {path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class SnapshotNotFoundError(WALError):
    """No snapshot record in the log matches the marker the caller opened from."""


class SnapshotMismatchError(WALError):
    """The log has a snapshot record at the marker's index, but with another term."""


class MetadataConflictError(WALError):
    """Two segments carry different metadata (member/cluster identity)."""


class RecordTooLargeError(WALError):
    """A record's body exceeds the frame limit (64 MiB); nothing was written."""


class FatalIOError(WALError):
    """A write or fsync failed. The WAL is now unusable: log it and exit, never retry."""


class ClosedError(WALError):
    """The WAL was closed or failed earlier."""
