"""Unit tests of raft/'s core: single-member and 3-member election, replication and commit,
proposal forwarding, dropped proposals, storage, and the Ready contract."""

from __future__ import annotations

import random

import pytest

from raft import (
    Config,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RawNode,
    StateType,
    StepLocalMsgError,
)
from raft.errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from tests.raft_harness import Cluster, Member


def test_single_member_commits_in_the_same_ready() -> None:
    """One member elects itself on campaign() and a proposal is committed in the very Ready
    that carries it for persistence (the server fsyncs before applying, etcd#14370)."""
    m = Member(1, [1], seed=1)
    m.node.campaign()
    m.handle_ready()
    assert m.state == StateType.LEADER
    m.node.propose(b"x")
    rd = m.node.ready()
    assert [e.data for e in rd.entries] == [b"x"]
    assert [e.data for e in rd.committed_entries] == [b"x"]
    assert rd.must_sync
    assert rd.hard_state is not None and rd.hard_state.commit == rd.entries[-1].index
    m.node.advance(rd)
    assert not m.node.has_ready()


def test_single_member_elects_itself_on_election_timeout() -> None:
    """Without campaign(), the member becomes leader within 2 election timeouts of ticks."""
    m = Member(1, [1], seed=7)
    m.handle_ready()
    for _ in range(20):
        m.node.tick()
        m.handle_ready()
        if m.state == StateType.LEADER:
            break
    assert m.state == StateType.LEADER


def test_three_members_elect_and_replicate() -> None:
    """A campaign wins the election; proposals from the leader and from a follower (forwarded)
    are applied on every member in the same order."""
    c = Cluster(3)
    c.elect(1)
    assert all(m.raft.lead == 1 for m in c.members.values())
    c.members[1].node.propose(b"a")
    c.members[2].node.propose(b"b")  # forwarded to the leader
    c.stabilize()
    applied = [[d for _, _, d in m.applied] for m in c.members.values()]
    assert applied == [[b"a", b"b"]] * 3


def test_commit_needs_a_quorum() -> None:
    """With both followers cut off the leader appends but does not commit; after healing it
    commits."""
    c = Cluster(3)
    leader = c.elect(1)
    c.isolated = {2, 3}
    leader.node.propose(b"a")
    c.stabilize()
    assert leader.applied == []
    c.isolated = set()
    c.tick_all(2)  # heartbeats make the leader resend the append
    assert [d for _, _, d in leader.applied] == [b"a"]


def test_proposal_dropped_without_leader() -> None:
    """A member that knows no leader raises ProposalDroppedError."""
    c = Cluster(3)
    with pytest.raises(ProposalDroppedError):
        c.members[1].node.propose(b"a")


def test_step_refuses_local_messages() -> None:
    """RawNode.step refuses message types only Raft itself may produce."""
    m = Member(1, [1], seed=1)
    with pytest.raises(StepLocalMsgError):
        m.node.step(Message(MessageType.MSG_HUP))


def test_restart_from_storage_keeps_state() -> None:
    """A member rebuilt from its MemoryStorage keeps term, vote, commit and log."""
    c = Cluster(3)
    c.elect(1)
    c.members[1].node.propose(b"a")
    c.stabilize()
    old = c.members[2]
    hs = old.storage.hard_state
    again = Member(2, None, seed=2, storage=old.storage)
    assert again.raft.term == hs.term and again.raft.vote == hs.vote
    assert again.raft.raft_log.committed == hs.commit
    assert again.raft.raft_log.last_index() == old.raft.raft_log.last_index()


def test_memory_storage_compact_and_snapshot() -> None:
    """MemoryStorage answers term/entries, compacts, refuses stale snapshots, and raises
    CompactedError / UnavailableError outside its range."""
    s = MemoryStorage()
    s.append([Entry(1, i) for i in range(1, 6)])
    assert s.first_index() == 1 and s.last_index() == 5
    assert [e.index for e in s.entries(2, 4)] == [2, 3]
    s.create_snapshot(3, None, b"data")
    s.compact(3)
    assert s.first_index() == 4 and s.term(3) == 1
    with pytest.raises(CompactedError):
        s.term(2)
    with pytest.raises(CompactedError):
        s.entries(3, 5)
    with pytest.raises(UnavailableError):
        s.term(9)
    with pytest.raises(SnapshotOutOfDateError):
        s.create_snapshot(2, None, b"")
    s.append([Entry(2, 5), Entry(2, 6)])  # overwrites index 5
    assert [(e.index, e.term) for e in s.entries(4, 7)] == [(4, 1), (5, 2), (6, 2)]


def test_max_size_per_msg_limits_appends() -> None:
    """A follower catching up gets appends of at most max_size_per_msg bytes (but at least
    one entry each)."""
    c = Cluster(3, max_size_per_msg=100)
    leader = c.elect(1)
    c.isolated = {3}
    leader.node.propose_batch([b"x" * 40] * 10)
    c.stabilize()
    c.isolated = set()
    leader.node.tick()
    apps = []
    for _ in range(100):
        c.collect()
        if not c.queue:
            break
        apps += [m for m in c.queue if m.type == MessageType.MSG_APP and m.to == 3 and m.entries]
        c.deliver()
    assert len(apps) >= 5
    assert all(sum(21 + len(e.data) for e in m.entries) <= 100 for m in apps)
    assert len(c.members[3].applied) == 10


def test_config_validation() -> None:
    """Bad configurations are refused."""
    with pytest.raises(ValueError):
        RawNode(Config(id=0, storage=MemoryStorage(), rng=random.Random(1)))
    with pytest.raises(ValueError):
        RawNode(Config(id=1, storage=MemoryStorage(), rng=random.Random(1), election_tick=1))


def test_hard_state_reported_once() -> None:
    """A Ready carries the hard state only when it changed."""
    m = Member(1, [1], seed=1)
    rds, _ = m.handle_ready()
    assert rds[0].hard_state == HardState(1, 0, 1)
    m.node.campaign()
    rd = m.node.ready()
    assert rd.hard_state is not None and rd.hard_state.term == 2
    m.node.advance(rd)
    m.node.tick()
    assert not m.node.has_ready()


def test_uncommitted_entries_size_limit() -> None:
    """A leader that cannot commit refuses proposals once its uncommitted payload would pass
    max_uncommitted_entries_size, and accepts them again once the backlog commits."""
    c = Cluster(3)
    for m in c.members.values():
        m.raft.max_uncommitted_size = 100
    leader = c.elect(1)
    c.isolated = {2, 3}
    leader.node.propose(b"x" * 40)
    leader.node.propose(b"x" * 40)
    with pytest.raises(ProposalDroppedError):
        leader.node.propose(b"x" * 40)
    c.stabilize()
    c.isolated = set()
    c.tick_all(3)
    assert len(leader.applied) == 2
    leader.node.propose(b"x" * 40)  # accepted again
    c.stabilize()
    assert len(leader.applied) == 3
