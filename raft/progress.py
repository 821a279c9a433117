"""The leader's view of each member: Progress (match/next and flow control) and the
ProgressTracker (configuration, votes, quorum arithmetic).

Theory of operation: a follower's Progress is in one of three states. PROBE: the leader sends
one append per heartbeat interval until it learns where the logs match. REPLICATE: appends are
pipelined optimistically, at most `max_inflight` unacknowledged at once. SNAPSHOT: the follower
needs a snapshot; nothing else is sent until it reports back.
"""

from __future__ import annotations

import enum
from collections import deque

from raft.types import ConfState


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


PROBE = ProgressState.PROBE
REPLICATE = ProgressState.REPLICATE
SNAPSHOT = ProgressState.SNAPSHOT


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "pending_snapshot",
        "recent_active",
        "probe_sent",
        "inflights",
        "max_inflight",
        "is_learner",
    )

    def __init__(self, match: int, next_index: int, max_inflight: int, is_learner: bool) -> None:
        # Invariant: match < next.
        self.match = match
        self.next = next_index
        self.state = PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        self.probe_sent = False
        # Last index of each append in flight, oldest first; bounded by max_inflight.
        self.inflights: deque[int] = deque()
        self.max_inflight = max_inflight
        self.is_learner = is_learner

    def __repr__(self) -> str:
        learner = " learner" if self.is_learner else ""
        extra = f" pending_snap={self.pending_snapshot}" if self.state == SNAPSHOT else ""
        return (
            f"{self.state.name} match={self.match} next={self.next}{learner}"
            f"{' paused' if self.is_paused() else ''}{extra}"
            f" inflight={len(self.inflights)}"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.clear()

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """Record that the follower's log matches ours up to n."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """Back off after a rejection of the append at `rejected`; False if it is stale."""
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True

    def inflights_full(self) -> bool:
        return len(self.inflights) >= self.max_inflight

    def free_le(self, index: int) -> None:
        """Forget every append in flight whose last index is <= index (acknowledged)."""
        q = self.inflights
        while q and q[0] <= index:
            q.popleft()


class VoteResult(enum.IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


class ProgressTracker:
    """Members and their progress. Single-step configuration changes only (no joint
    consensus): voters and learners are disjoint sets."""

    def __init__(self, max_inflight: int) -> None:
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.max_inflight = max_inflight

    def conf_state(self) -> ConfState:
        return ConfState(tuple(sorted(self.voters)), tuple(sorted(self.learners)))

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def committed(self) -> int:
        """The largest index that a quorum of voters has matched."""
        voters = self.voters
        prs = self.progress
        if len(voters) == 1:
            for v in voters:
                return prs[v].match
        if not voters:
            return 0
        if len(voters) == 3:
            a, b, c = [prs[v].match for v in voters]
            return max(min(a, b), min(max(a, b), c))  # the median: two of three have it
        matches = sorted([prs[v].match for v in voters], reverse=True)
        return matches[len(voters) // 2]

    def quorum_active(self) -> bool:
        """Whether a quorum of voters was recently active (check-quorum)."""
        active = sum(1 for v in self.voters if self.progress[v].recent_active)
        return active >= self.quorum()

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, member: int, granted: bool) -> None:
        self.votes.setdefault(member, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = rejected = 0
        for v in self.voters:
            got = self.votes.get(v)
            if got is None:
                continue
            if got:
                granted += 1
            else:
                rejected += 1
        return granted, rejected, self.vote_result(granted, rejected)

    def vote_result(self, granted: int, rejected: int) -> VoteResult:
        q = self.quorum()
        if granted >= q:
            return VoteResult.WON
        if granted + (len(self.voters) - granted - rejected) >= q:
            return VoteResult.PENDING
        return VoteResult.LOST

    def acks_won(self, acks: set[int]) -> bool:
        return len(acks & self.voters) >= self.quorum()

    def member_ids(self) -> list[int]:
        return sorted(self.progress)
