"""The stable log as Raft sees it (read only) and MemoryStorage, etcd's in-memory one.

Theory of operation: the application persists what a Ready hands it (WAL) and then appends the
same entries / hard state / snapshot to a MemoryStorage, which Raft reads. `ents[0]` is a dummy
entry standing for the last compacted (or snapshotted) index and its term, so term(first-1)
stays answerable after compaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raft.errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from raft.types import EMPTY_HARD_STATE, ConfState, Entry, HardState, Snapshot, entry_size

NO_LIMIT = (1 << 63) - 1


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...
    def entries(self, lo: int, hi: int, max_size: int) -> list[Entry]: ...
    def term(self, i: int) -> int: ...
    def last_index(self) -> int: ...
    def first_index(self) -> int: ...
    def snapshot(self) -> Snapshot: ...


def limit_size(ents: list[Entry], max_size: int) -> list[Entry]:
    """The longest prefix of ents within max_size bytes, but never fewer than one entry."""
    if max_size >= NO_LIMIT or len(ents) <= 1:
        return ents
    size = entry_size(ents[0])
    for i in range(1, len(ents)):
        size += entry_size(ents[i])
        if size > max_size:
            return ents[:i]
    return ents


class MemoryStorage:
    def __init__(self) -> None:
        self.hard_state = EMPTY_HARD_STATE
        self._snapshot = Snapshot()
        # Invariant: ents[0] is the dummy entry at the snapshot's (index, term).
        self.ents: list[Entry] = [Entry(0, 0)]

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.conf_state

    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def entries(self, lo: int, hi: int, max_size: int = NO_LIMIT) -> list[Entry]:
        offset = self.ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first is {offset + 1})")
        assert hi <= self.last_index() + 1, f"entries' hi({hi}) is out of bound {self.last_index()}"
        if len(self.ents) == 1:
            raise UnavailableError("only the dummy entry is present")
        return limit_size(self.ents[lo - offset : hi - offset], max_size)

    def term(self, i: int) -> int:
        offset = self.ents[0].index
        if i < offset:
            raise CompactedError(f"index {i} is compacted")
        if i - offset >= len(self.ents):
            raise UnavailableError(f"index {i} is not in the log yet")
        return self.ents[i - offset].term

    def last_index(self) -> int:
        return self.ents[0].index + len(self.ents) - 1

    def first_index(self) -> int:
        return self.ents[0].index + 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot (a follower installing one from its leader)."""
        if snap.index <= self._snapshot.index:
            raise SnapshotOutOfDateError(f"snapshot {snap.index} <= {self._snapshot.index}")
        self._snapshot = snap
        self.ents = [Entry(snap.term, snap.index)]

    def create_snapshot(self, i: int, cs: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at index i (the log is not compacted)."""
        if i <= self._snapshot.index:
            raise SnapshotOutOfDateError(f"snapshot {i} <= {self._snapshot.index}")
        offset = self.ents[0].index
        assert i <= self.last_index(), f"snapshot {i} is out of bound {self.last_index()}"
        conf = cs if cs is not None else self._snapshot.conf_state
        self._snapshot = Snapshot(i, self.ents[i - offset].term, conf, data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries before compact_index (it becomes the dummy entry)."""
        offset = self.ents[0].index
        if compact_index <= offset:
            raise CompactedError(f"index {compact_index} is already compacted")
        assert compact_index <= self.last_index(), f"compact {compact_index} is out of bound"
        i = compact_index - offset
        self.ents = [Entry(self.ents[i].term, self.ents[i].index), *self.ents[i + 1 :]]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, truncating any conflicting suffix first."""
        if not entries:
            return
        first = self.first_index()
        last = entries[0].index + len(entries) - 1
        if last < first:
            return  # all of them are compacted already
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self.ents[0].index
        if len(self.ents) > offset:
            del self.ents[offset:]
            self.ents.extend(entries)
        elif len(self.ents) == offset:
            self.ents.extend(entries)
        else:
            raise AssertionError(
                f"missing log entry [last: {self.last_index()}, append at: {entries[0].index}]"
            )
