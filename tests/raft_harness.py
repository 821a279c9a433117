"""Test harness for raft/: a member that acts on its Ready the way the server does (persist to
MemoryStorage, send, apply), and a lossless in-order network for scripted tests."""

from __future__ import annotations

import random
from collections.abc import Iterable

from raft import (
    ConfChange,
    Config,
    EntryType,
    MemoryStorage,
    Message,
    RawNode,
    Ready,
    StateType,
    StepPeerNotFoundError,
)
from raft.codec import decode_conf_change


class Member:
    """A RawNode plus its storage and applied state (a list of applied entry data)."""

    def __init__(
        self,
        member_id: int,
        peers: Iterable[int] | None,
        seed: int,
        *,
        storage: MemoryStorage | None = None,
        applied: int = 0,
        pre_vote: bool = True,
        check_quorum: bool = True,
        election_tick: int = 10,
        max_size_per_msg: int = 1 << 20,
        max_inflight_msgs: int = 256,
    ) -> None:
        self.id = member_id
        self.storage = storage if storage is not None else MemoryStorage()
        cfg = Config(
            id=member_id,
            storage=self.storage,
            rng=random.Random(seed * 1000 + member_id),
            election_tick=election_tick,
            heartbeat_tick=1,
            applied=applied,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_size_per_msg=max_size_per_msg,
            max_inflight_msgs=max_inflight_msgs,
        )
        self.node = RawNode(cfg, peers=list(peers) if peers else None)
        self.applied: list[tuple[int, int, bytes]] = []  # (index, term, data) of normal entries
        self.read_states: list = []

    @property
    def raft(self):  # noqa: ANN201 - test convenience
        return self.node.raft

    @property
    def state(self) -> StateType:
        return self.node.raft.state

    def handle_ready(self) -> tuple[list[Ready], list[Message]]:
        """Persist, apply and collect the messages of every Ready until there is none."""
        readies = []
        msgs: list[Message] = []
        while self.node.has_ready():
            rd = self.node.ready()
            self.persist(rd)
            msgs.extend(rd.messages)
            self.apply(rd)
            self.read_states.extend(rd.read_states)
            self.node.advance(rd)
            readies.append(rd)
        return readies, msgs

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
            self.applied = [(rd.snapshot.index, rd.snapshot.term, b"<snapshot>")]
        self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)

    def apply(self, rd: Ready) -> None:
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                self.node.apply_conf_change(decode_conf_change(e.data))
            elif e.data:
                self.applied.append((e.index, e.term, e.data))


class Cluster:
    """Members on a perfect network: messages are delivered in order, none lost, unless a
    member is isolated (its messages in both directions are dropped)."""

    def __init__(self, n: int, seed: int = 1, **kw: object) -> None:
        ids = list(range(1, n + 1))
        self.members = {i: Member(i, ids, seed, **kw) for i in ids}  # type: ignore[arg-type]
        self.isolated: set[int] = set()
        self.queue: list[Message] = []

    def collect(self) -> None:
        for m in self.members.values():
            self.queue.extend(m.handle_ready()[1])

    def deliver(self) -> int:
        msgs, self.queue = self.queue, []
        n = 0
        for m in msgs:
            if m.to in self.isolated or m.from_ in self.isolated or m.to not in self.members:
                continue
            try:
                self.members[m.to].node.step(m)
            except StepPeerNotFoundError:
                continue  # a late response from a removed member: the transport drops it
            n += 1
        return n

    def stabilize(self, rounds_max: int = 1000) -> None:
        for _ in range(rounds_max):
            self.collect()
            if not self.queue:
                return
            self.deliver()
        raise AssertionError("cluster did not stabilize")

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for m in self.members.values():
                m.node.tick()
            self.stabilize()

    def leader(self) -> Member | None:
        leaders = [m for m in self.members.values() if m.state == StateType.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def elect(self, member_id: int) -> Member:
        self.members[member_id].node.campaign()
        self.stabilize()
        m = self.members[member_id]
        assert m.state == StateType.LEADER, m.node.status()
        return m

    def conf_change(self, leader_id: int, cc: ConfChange) -> None:
        self.members[leader_id].node.propose_conf_change(cc)
        self.stabilize()
