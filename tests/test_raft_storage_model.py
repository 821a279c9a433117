"""MemoryStorage against a plain model (Hypothesis stateful test): appends that overwrite
suffixes, snapshots, compaction and snapshot installation, with every read checked."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raft import ConfState, Entry, MemoryStorage, Snapshot
from raft.errors import CompactedError, SnapshotOutOfDateError, UnavailableError


class StorageModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = MemoryStorage()
        self.terms: dict[int, int] = {}  # index -> term of every retained entry
        self.offset = 0  # index of the dummy entry (last compacted or snapshotted)
        self.offset_term = 0
        self.snap_index = 0

    def last(self) -> int:
        return max(self.terms, default=self.offset)

    @rule(start_back=st.integers(0, 3), n=st.integers(1, 5), term=st.integers(1, 9))
    def append(self, start_back: int, n: int, term: int) -> None:
        start = max(self.offset + 1, self.last() + 1 - start_back)
        ents = [Entry(term, i, 0, b"d%d" % i) for i in range(start, start + n)]
        self.s.append(ents)
        for i in [i for i in self.terms if i >= start]:
            del self.terms[i]
        self.terms.update({e.index: e.term for e in ents})

    @precondition(lambda self: self.last() > self.snap_index)
    @rule(data=st.data())
    def snapshot_and_compact(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(self.snap_index + 1, self.last()))
        snap = self.s.create_snapshot(i, ConfState((1,)), b"s")
        assert (snap.index, snap.term) == (i, self.term_of(i))
        self.snap_index = i
        if data.draw(st.booleans()) and i > self.offset:
            self.offset_term = self.term_of(i)
            self.s.compact(i)
            self.terms = {k: v for k, v in self.terms.items() if k > i}
            self.offset = i

    @rule(ahead=st.integers(1, 10), term=st.integers(1, 9))
    def install_snapshot(self, ahead: int, term: int) -> None:
        index = self.snap_index + ahead
        self.s.apply_snapshot(Snapshot(index, term, ConfState((1,)), b"x"))
        self.snap_index = self.offset = index
        self.offset_term = term
        self.terms = {}

    @rule()
    def stale_snapshot_refused(self) -> None:
        with pytest.raises(SnapshotOutOfDateError):
            self.s.apply_snapshot(Snapshot(self.snap_index, 1, ConfState(), b""))

    def term_of(self, i: int) -> int:
        return self.offset_term if i == self.offset else self.terms[i]

    @invariant()
    def reads_match(self) -> None:
        s = self.s
        assert s.first_index() == self.offset + 1
        assert s.last_index() == self.last()
        for i in range(self.offset, self.last() + 1):
            assert s.term(i) == self.term_of(i)
        if self.offset > 0:
            with pytest.raises(CompactedError):
                s.term(self.offset - 1)
        with pytest.raises(UnavailableError):
            s.term(self.last() + 1)
        if self.terms:
            got = s.entries(self.offset + 1, self.last() + 1)
            assert [(e.index, e.term) for e in got] == sorted(self.terms.items())


TestStorageModel = StorageModel.TestCase
TestStorageModel.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, derandomize=True
)
