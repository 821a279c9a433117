"""RaftLog: the stable log (Storage) plus the unstable tail not yet persisted.

Theory of operation: entries enter `unstable` (appended by a leader or received from one), are
handed to the application in Ready.entries, and leave `unstable` when the application calls
advance (stable_to). Indices: first_index <= applied <= committed <= last_index.
"""

from __future__ import annotations

from raft.errors import CompactedError, UnavailableError
from raft.storage import NO_LIMIT, Storage, limit_size
from raft.types import Entry, Snapshot


class Unstable:
    """Entries and a snapshot not yet written to stable storage. entries[i] has index
    offset + i; a snapshot, if any, comes before them."""

    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        return self.snapshot.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        return self.snapshot.index if self.snapshot is not None else None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.index == i:
                return self.snapshot.term
            return None
        k = i - self.offset
        if k >= len(self.entries):
            return None
        return self.entries[k].term

    def stable_to(self, i: int, t: int) -> None:
        # Only a match of (index, term) in the unstable tail counts: the entry may have been
        # replaced by a newer leader's since the Ready that carried it.
        if i >= self.offset and self.maybe_term(i) == t:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.index == i:
            self.snapshot = None

    def restore(self, s: Snapshot) -> None:
        self.offset = s.index + 1
        self.entries = []
        self.snapshot = s

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        assert self.offset <= lo <= hi <= self.offset + len(self.entries), (lo, hi, self.offset)
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    def __init__(self, storage: Storage, max_next_ents_size: int = NO_LIMIT) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Invariant: applied <= committed <= last_index().
        self.committed = first - 1
        self.applied = first - 1
        self.max_next_ents_size = max_next_ents_size

    def __repr__(self) -> str:
        return (
            f"committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)}"
        )

    def first_index(self) -> int:
        s = self.unstable.snapshot
        return s.index + 1 if s is not None else self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.index
        return self.storage.last_index()

    def term(self, i: int) -> int:
        """The term of entry i; 0 if i is outside [first-1, last]. Raises UnavailableError
        when storage cannot answer."""
        u = self.unstable
        k = i - u.offset
        if k >= 0:
            # Beyond the unstable tail is beyond the last index.
            return u.entries[k].term if k < len(u.entries) else 0
        s = u.snapshot
        if s is not None:
            return s.term if i == s.index else 0
        try:
            return self.storage.term(i)
        except CompactedError:
            return 0  # below the dummy entry: out of range (etcd answers 0 too)

    def term_or_zero(self, i: int) -> int:
        try:
            return self.term(i)
        except CompactedError:
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, lasti: int, t: int) -> bool:
        """Whether a log ending at (lasti, t) is at least as up to date as ours (§5.4.1)."""
        last_term = self.last_term()
        return t > last_term or (t == last_term and lasti >= self.last_index())

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """Append ents after (index, log_term) if our log matches there; return the new last
        index of the appended range, or None on a mismatch."""
        if not self.match_term(index, log_term):
            return None
        lastnewi = index + len(ents)
        if ents:
            # The common case appends right after our last entry: nothing to compare.
            ci = index + 1 if index == self.last_index() else self.find_conflict(ents)
            if ci:
                assert ci > self.committed, f"entry {ci} conflicts with committed {self.committed}"
                self.unstable.truncate_and_append(list(ents[ci - index - 1 :]))
        if self.committed < committed:
            self.commit_to(min(committed, lastnewi))
        return lastnewi

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        assert after >= self.committed, f"after({after}) is out of range [{self.committed}]"
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """The index of the first entry that is new or conflicts with ours, else 0."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= index whose term is <= term (fast back-tracking, §5.3)."""
        li = self.last_index()
        if index > li:
            return index
        while index > 0:
            try:
                our = self.term(index)
            except (CompactedError, UnavailableError):
                return index
            if our <= term:
                return index
            index -= 1
        return index

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def next_ents(self) -> list[Entry]:
        """Committed entries not yet applied (they may still be unstable)."""
        if self.committed <= self.applied:
            return []
        off = max(self.applied + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_next_ents_size)
        return []

    def has_next_ents(self) -> bool:
        c = self.committed
        return c > self.applied and c >= self.first_index()

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def commit_to(self, tocommit: int) -> None:
        if self.committed < tocommit:
            assert self.last_index() >= tocommit, (
                f"tocommit({tocommit}) is out of range [lastIndex({self.last_index()})]"
            )
            self.committed = tocommit

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        assert self.applied <= i <= self.committed, (i, self.applied, self.committed)
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to max_index only if that entry is of the current term (Figure 8)."""
        if max_index > self.committed and self.term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def restore(self, s: Snapshot) -> None:
        self.committed = s.index
        self.unstable.restore(s)

    def entries(self, i: int, max_size: int = NO_LIMIT) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def all_entries(self) -> list[Entry]:
        return self.entries(self.first_index())

    def slice(self, lo: int, hi: int, max_size: int = NO_LIMIT) -> list[Entry]:
        """Entries [lo, hi) within max_size bytes; raises CompactedError if lo is compacted."""
        if lo == hi:
            return []
        u = self.unstable
        if u.offset <= lo and hi <= u.offset + len(u.entries):
            return limit_size(u.entries[lo - u.offset : hi - u.offset], max_size)  # fast path
        self._check_out_of_bounds(lo, hi)
        ents: list[Entry]
        if lo >= u.offset:
            ents = u.entries[lo - u.offset : hi - u.offset]
        else:
            ents = self.storage.entries(lo, min(hi, u.offset), max_size)
            if len(ents) < min(hi, u.offset) - lo:
                return ents  # storage already hit the size limit
            if hi > u.offset:
                ents = ents + u.slice(max(lo, u.offset), hi)
        return limit_size(ents, max_size)

    def _check_out_of_bounds(self, lo: int, hi: int) -> None:
        assert lo <= hi, f"invalid slice {lo} > {hi}"
        fi = self.first_index()
        if lo < fi:
            raise CompactedError(f"index {lo} is compacted (first is {fi})")
        assert hi <= self.last_index() + 1, (
            f"slice[{lo},{hi}) out of bound [{fi},{self.last_index()}]"
        )
