"""Raft's typed errors. server/ maps the ones a client can see (ProposalDroppedError) to
etcd's text; the rest are storage outcomes that Raft itself handles."""

from __future__ import annotations


class RaftError(Exception):
    """Base of every error raised by raft/."""


class CompactedError(RaftError):
    """The requested index is older than the storage's first index (compacted away)."""


class UnavailableError(RaftError):
    """The requested index is newer than the storage's last index."""


class SnapshotOutOfDateError(RaftError):
    """The snapshot is older than the one the storage already has."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """The application cannot produce a snapshot now; Raft retries later."""


class ProposalDroppedError(RaftError):
    """The proposal was dropped: no leader known, a leader transfer is under way, or this
    node was removed. The client may retry."""


class StepLocalMsgError(RaftError):
    """RawNode.step was given a message type that only Raft itself may produce."""


class StepPeerNotFoundError(RaftError):
    """RawNode.step was given a response from a member that is not in the configuration."""
