"""The deterministic simulator (tests/raft_sim.py) over many seeds, and proof that it catches
planted bugs. A failure names its seed and the one command that replays it."""

from __future__ import annotations

import dataclasses

import pytest

from raft import Entry
from raft.log import RaftLog
from raft.raft import Raft
from tests.raft_sim import CHAOS, SafetyViolation, SimParams, replay_command, run_seed

# The leader sends a Ready's messages before persisting it (as the server does) and may crash
# in between, losing entries it already sent.
LEADER_SENDS_FIRST = SimParams(members=3, leader_sends_first=True, p_crash_mid_ready=0.05)

# (name, params, first seed, seed count): 700 seeds in all.
SUITES = [
    ("1-member", SimParams(members=1), 0, 100),
    ("3-members", SimParams(members=3), 1000, 250),
    ("5-members", SimParams(members=5), 2000, 80),
    ("3-members-membership", SimParams(members=3, p_membership=0.02), 3000, 80),
    ("5-members-membership", SimParams(members=5, p_membership=0.02), 4000, 20),
    ("3-members-chaos", CHAOS, 5000, 80),
    ("5-members-chaos", dataclasses.replace(CHAOS, members=5), 6000, 20),
    ("3-members-codec", SimParams(members=3, use_codec=True), 7000, 20),
    ("3-members-leader-sends-first", LEADER_SENDS_FIRST, 8000, 50),
]
CHUNK_SEEDS = 50


def _chunks() -> list[tuple[str, SimParams, int, int]]:
    out = []
    for name, params, first, count in SUITES:
        for start in range(first, first + count, CHUNK_SEEDS):
            n = min(CHUNK_SEEDS, first + count - start)
            out.append((f"{name}-{start}", params, start, n))
    return out


@pytest.mark.parametrize(
    ("params", "first", "count"),
    [pytest.param(p, f, n, id=name) for name, p, f, n in _chunks()],
)
def test_simulated_cluster_is_safe_and_live(params: SimParams, first: int, count: int) -> None:
    """Each seed runs a cluster through faults with safety checked after every round, then
    heals it and requires a leader and every acknowledged proposal applied everywhere."""
    acked = 0
    for seed in range(first, first + count):
        try:
            sim = run_seed(seed, params)
        except SafetyViolation as err:
            pytest.fail(f"{err}\nreplay: {replay_command(seed, params)}")
        acked += len(sim.acked)
    assert acked > 0, "no proposal was ever acknowledged: the workload did nothing"


def _first_failing_seed(params: SimParams, seeds: range) -> tuple[int, str] | None:
    for seed in seeds:
        try:
            run_seed(seed, params)
        except SafetyViolation as err:
            return seed, str(err)
    return None


def test_simulator_catches_commit_of_earlier_term_by_counting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted bug: the leader commits an entry of an earlier term once a majority stores it
    (no current-term check). The simulator must find a seed that breaks safety."""

    def buggy_maybe_commit(self: RaftLog, max_index: int, term: int) -> bool:
        if max_index > self.committed:
            self.commit_to(max_index)
            return True
        return False

    # The correct rule survives the same seeds.
    assert _first_failing_seed(CHAOS, range(0, 20)) is None
    monkeypatch.setattr(RaftLog, "maybe_commit", buggy_maybe_commit)
    found = _first_failing_seed(CHAOS, range(0, 300))
    assert found is not None, "the simulator missed the planted commit-rule bug"
    print(f"planted commit-rule bug caught by seed {found[0]}: {found[1]}")


def test_simulator_catches_votes_for_stale_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bug: members grant votes without the log up-to-date check (§5.4.1)."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, lasti, term: True)
    found = _first_failing_seed(SimParams(members=3), range(0, 300))
    assert found is not None, "the simulator missed the planted voting bug"
    print(f"planted voting bug caught by seed {found[0]}: {found[1]}")


def test_simulator_catches_reads_without_leadership_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted bug: the leader answers a read index from its commit index without confirming
    its leadership; a deposed leader then serves stale reads."""
    monkeypatch.setattr(
        Raft,
        "_leader_read_index",
        lambda self, m: self._respond_read_index(m, self.raft_log.committed),
    )
    found = _first_failing_seed(SimParams(members=3), range(0, 300))
    assert found is not None, "the simulator missed the planted read-index bug"
    print(f"planted read-index bug caught by seed {found[0]}: {found[1]}")


def test_simulator_catches_appends_without_the_consistency_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted bug: a follower accepts an append without checking that its log matches at
    the entry before it (§5.3); the per-step log matching check sees the diverging prefix."""

    def buggy_maybe_append(
        self: RaftLog, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        if index > self.last_index():
            return None
        ci = self.find_conflict(ents)
        if ci:
            self.append(list(ents[ci - index - 1 :]))
        self.commit_to(min(committed, index + len(ents)))
        return index + len(ents)

    monkeypatch.setattr(RaftLog, "maybe_append", buggy_maybe_append)
    found = _first_failing_seed(SimParams(members=3), range(0, 300))
    assert found is not None, "the simulator missed the planted log-matching bug"
    print(f"planted log-matching bug caught by seed {found[0]}: {found[1]}")
