"""Membership, learners, restarts and leader transfer edge cases of raft/."""

from __future__ import annotations

from raft import ConfChange, ConfChangeType, MessageType, StateType
from tests.raft_harness import Cluster, Member


def _add(c: Cluster, leader: int, kind: ConfChangeType, member: int) -> None:
    if member not in c.members:
        c.members[member] = Member(member, None, seed=1)
    c.conf_change(leader, ConfChange(kind, member))


def test_learner_replicates_but_never_votes_or_campaigns() -> None:
    """A learner receives every entry, does not count toward the commit quorum and never
    starts an election, however long it waits."""
    c = Cluster(3)
    c.elect(1)
    _add(c, 1, ConfChangeType.ADD_LEARNER_NODE, 4)
    c.tick_all(2)
    learner = c.members[4]
    assert learner.raft.is_learner
    c.members[1].node.propose(b"a")
    c.stabilize()
    assert [d for _, _, d in learner.applied] == [b"a"]
    assert 4 not in c.members[1].raft.prs.voters
    c.isolated = {1, 2, 3}
    for _ in range(100):
        learner.node.tick()
        learner.handle_ready()
    assert learner.state == StateType.FOLLOWER and learner.raft.term == c.members[1].raft.term


def test_promoted_learner_counts_toward_quorum() -> None:
    """After promotion (ADD_NODE on a learner) the member is a voter: with two of four
    members cut off, nothing commits."""
    c = Cluster(3)
    c.elect(1)
    _add(c, 1, ConfChangeType.ADD_LEARNER_NODE, 4)
    c.tick_all(2)
    _add(c, 1, ConfChangeType.ADD_NODE, 4)
    assert c.members[1].raft.prs.voters == {1, 2, 3, 4}
    c.isolated = {3, 4}
    c.members[1].node.propose(b"x")
    c.stabilize()
    assert c.members[1].applied == []
    c.isolated = set()
    c.tick_all(2)
    assert [d for _, _, d in c.members[1].applied] == [b"x"]


def test_second_conf_change_waits_for_the_first_to_apply() -> None:
    """A configuration change proposed while another is unapplied becomes an empty entry."""
    c = Cluster(3)
    leader = c.elect(1)
    leader.node.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    leader.node.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 2))
    c.stabilize()
    assert leader.raft.prs.voters == {1, 2}


def test_removed_leader_steps_down_and_the_rest_elect() -> None:
    """A leader that applies its own removal steps down; the others elect a new leader and go
    on committing without it."""
    c = Cluster(3)
    leader = c.elect(1)
    leader.node.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    c.stabilize()
    assert leader.state == StateType.FOLLOWER
    del c.members[1]
    for _ in range(50):
        c.tick_all()
        if c.leader() is not None:
            break
    new = c.leader()
    assert new is not None and new.id in (2, 3)
    new.node.propose(b"after")
    c.stabilize()
    assert all(m.applied[-1][2] == b"after" for m in c.members.values())


def test_transfer_to_a_learner_is_ignored() -> None:
    """Leadership cannot move to a learner."""
    c = Cluster(3)
    leader = c.elect(1)
    _add(c, 1, ConfChangeType.ADD_LEARNER_NODE, 4)
    leader.node.transfer_leader(4)
    c.stabilize()
    assert leader.state == StateType.LEADER and leader.raft.lead_transferee == 0


def test_transfer_is_aborted_after_an_election_timeout() -> None:
    """A transfer whose target never catches up is abandoned after an election timeout and
    proposals are accepted again."""
    c = Cluster(3)
    leader = c.elect(1)
    c.isolated = {3}
    leader.node.propose(b"a")
    c.stabilize()
    leader.node.transfer_leader(3)
    assert leader.raft.lead_transferee == 3
    for _ in range(leader.raft.election_timeout):
        leader.node.tick()
    c.stabilize()
    assert leader.raft.lead_transferee == 0
    leader.node.propose(b"b")  # does not raise


def test_single_member_restarts_and_leads_again() -> None:
    """A single member restarted from its storage (no peers) rebuilds its configuration from
    the committed bootstrap entries in its first Ready, then campaigns, wins, keeps its log
    and commits new proposals."""
    m = Member(1, [1], seed=3)
    m.node.campaign()
    m.handle_ready()
    for d in (b"a", b"b"):
        m.node.propose(d)
        m.handle_ready()
    last = m.raft.raft_log.last_index()
    again = Member(1, None, seed=4, storage=m.storage)
    again.handle_ready()
    assert [d for _, _, d in again.applied] == [b"a", b"b"]
    again.node.campaign()
    again.handle_ready()
    assert again.state == StateType.LEADER
    again.node.propose(b"c")
    again.handle_ready()
    assert again.raft.raft_log.committed == last + 2  # its empty entry, then "c"
    assert [d for _, _, d in again.applied] == [b"a", b"b", b"c"]


def test_failed_snapshot_report_returns_follower_to_probe() -> None:
    """report_snapshot(failed=True) moves the follower's progress from SNAPSHOT to PROBE, and
    the leader sends the snapshot again later."""
    c = Cluster(3)
    leader = c.elect(1)
    c.isolated = {3}
    for d in (b"a", b"b", b"c"):
        leader.node.propose(d)
    c.stabilize()
    for m in (c.members[1], c.members[2]):
        idx = m.raft.raft_log.applied
        m.storage.create_snapshot(idx, m.raft.prs.conf_state(), b"snap")
        m.storage.compact(idx)
    c.queue.clear()
    c.isolated = set()
    snaps = []
    for _ in range(5):
        leader.node.tick()
        c.collect()
        snaps += [x for x in c.queue if x.type == MessageType.MSG_SNAP]
        c.queue = [x for x in c.queue if x.type != MessageType.MSG_SNAP]
        c.deliver()
        if snaps:
            break
    assert snaps, "the leader never sent a snapshot"
    pr = leader.raft.prs.progress[3]
    assert pr.state.name == "SNAPSHOT"
    leader.node.report_snapshot(3, failed=True)
    assert pr.state.name == "PROBE"
    c.tick_all(3)
    assert c.members[3].raft.raft_log.committed == leader.raft.raft_log.committed
