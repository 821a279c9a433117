"""The Raft consensus state machine, sans-IO: no sockets, files, clocks, threads or asyncio;
randomness comes from an injected, seeded random.Random. Shaped like etcd-io/raft: RawNode is
the API (tick, step, propose, ready, advance), MemoryStorage the stable log Raft reads, and
raft.codec the one binary codec for messages and entries."""

from raft.errors import (
    CompactedError,
    ProposalDroppedError,
    RaftError,
    SnapshotOutOfDateError,
    SnapshotTemporarilyUnavailableError,
    StepLocalMsgError,
    StepPeerNotFoundError,
    UnavailableError,
)
from raft.raft import Config
from raft.rawnode import RawNode
from raft.storage import MemoryStorage, Storage
from raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SoftState,
    StateType,
)

__all__ = [
    "CompactedError",
    "Config",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProposalDroppedError",
    "RaftError",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotOutOfDateError",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "StateType",
    "StepLocalMsgError",
    "StepPeerNotFoundError",
    "Storage",
    "UnavailableError",
]
