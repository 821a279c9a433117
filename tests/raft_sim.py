"""A deterministic simulator for raft/: whole clusters under a seeded, faulty network.

Theory of operation: time advances in rounds. In a round every live member ticks once, the
network delivers the messages that are due (in random order: reordering), each member handles
its Ready the way the server does (persist to its "disk", a MemoryStorage that Raft only reads,
then send, then apply, then advance), and the nemesis may act: crash a member (it restarts
later from exactly what it had persisted), partition the cluster, propose, ask for a read
index, transfer leadership, compact a log. The network drops, delays, duplicates and reorders
messages. Every random choice comes from one random.Random(seed), so a run replays exactly:

    python -m tests.raft_sim --seed 123 --members 3 [--verbose]

After every round the simulator checks Raft's safety properties:
- election safety: at most one leader per term;
- log matching: an (index, term) pair names one entry everywhere and always follows the same
  predecessor term (checked on every persisted entry, so prefixes agree by induction), and
  logs are also compared pairwise every 25 rounds;
- leader completeness: a new leader holds the highest entry known to be committed;
- state-machine safety: no two members apply different entries at one index;
- read index: a read point is at or above every proposal acknowledged before the read began,
  and once healed a read on any member is answered within a few heartbeats.
Then the faults heal (and the network becomes fast next to a tick, as in a real deployment);
within 20 election timeouts a stable leader must appear, and within
`heal_rounds_max` rounds every acknowledged proposal must be applied on every member, in the
same order everywhere.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import random
import sys
from collections.abc import Callable

from raft import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RawNode,
    Ready,
    StateType,
)
from raft.codec import decode_conf_change, decode_message, encode_message
from raft.errors import SnapshotOutOfDateError


class SafetyViolation(AssertionError):
    """A Raft safety property failed."""


@dataclasses.dataclass
class SimParams:
    members: int = 3
    fault_rounds: int = 300
    heal_rounds_max: int = 400
    election_tick: int = 10
    p_drop: float = 0.05
    p_dup: float = 0.03
    delay_rounds_max: int = 3
    p_propose: float = 0.4
    p_crash: float = 0.01
    p_crash_leader: float = 0.01
    crash_rounds_max: int = 60
    p_partition: float = 0.01
    partition_rounds_max: int = 80
    p_read: float = 0.05
    p_transfer: float = 0.005
    p_compact: float = 0.02
    p_membership: float = 0.0
    use_codec: bool = False
    max_size_per_msg: int | None = None  # None: chosen at random per seed
    chaos: bool = False  # the CHAOS schedule below (for the replay command)
    leader_sends_first: bool = False  # the leader sends a Ready's messages before persisting
    p_crash_mid_ready: float = 0.0  # ... and may crash between sending and persisting


# Many short elections, frequent leader crashes and partitions, one entry per append: the
# schedule that exposes commit-rule bugs (Raft paper, Figure 8).
CHAOS = SimParams(
    election_tick=5,
    p_drop=0.05,
    p_crash=0.05,
    p_crash_leader=0.1,
    crash_rounds_max=20,
    p_partition=0.1,
    partition_rounds_max=20,
    p_propose=0.8,
    max_size_per_msg=1,
    chaos=True,
)


class SimMember:
    """A member's process: a RawNode over its disk (MemoryStorage) and its applied state."""

    def __init__(
        self, sim: Sim, member_id: int, disk: MemoryStorage, peers: list[int] | None
    ) -> None:
        self.sim = sim
        self.id = member_id
        self.disk = disk
        snap = disk.snapshot()
        cfg = Config(
            id=member_id,
            storage=disk,
            rng=random.Random(sim.rng.randrange(1 << 32)),
            election_tick=sim.params.election_tick,
            heartbeat_tick=1,
            applied=snap.index,
            pre_vote=True,
            check_quorum=True,
            max_size_per_msg=sim.max_size_per_msg,
            max_inflight_msgs=sim.max_inflight_msgs,
        )
        self.node = RawNode(cfg, peers=peers)
        # The state machine: (index, term, data) of applied normal entries, in order.
        self.sm: list[tuple[int, int, bytes]] = []
        # (index, configuration in force from that index on), oldest first.
        self.conf_history: list[tuple[int, ConfState]] = [(0, ConfState(tuple(peers or ()), ()))]
        if snap.index:
            self.sm = [tuple(x) for x in ast.literal_eval(snap.data.decode())]  # type: ignore[misc]
            self.conf_history = [(snap.index, snap.conf_state)]
        self.applied_index = snap.index
        self.died = False  # crashed in the middle of handling a Ready

    def handle_ready(self) -> list[Message]:
        out: list[Message] = []
        p = self.sim.params
        while self.node.has_ready():
            rd = self.node.ready()
            self.sim.check_ready(self, rd)
            # A leader may send before its own write completes (the server does); it may then
            # die before the write, having sent entries it never persisted.
            early = p.leader_sends_first and self.node.raft.state == StateType.LEADER
            if early:
                out.extend(rd.messages)
                if self.sim.faults and self.sim.rng.random() < p.p_crash_mid_ready:
                    self.died = True
                    return out
            self.persist(rd)
            if not early:
                out.extend(rd.messages)
            self.apply(rd)
            for rs in rd.read_states:
                self.sim.check_read_state(self, rs.index, rs.request_ctx)
            self.node.advance(rd)
        return out

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.disk.apply_snapshot(rd.snapshot)
            self.sm = [tuple(x) for x in ast.literal_eval(rd.snapshot.data.decode())]  # type: ignore[misc]
            self.conf_history = [(rd.snapshot.index, rd.snapshot.conf_state)]
            self.applied_index = rd.snapshot.index
            self.sim.check_snapshot(self, rd.snapshot.index)
        self.disk.append(rd.entries)
        if rd.hard_state is not None:
            self.disk.set_hard_state(rd.hard_state)

    def apply(self, rd: Ready) -> None:
        for e in rd.committed_entries:
            if e.index <= self.applied_index:
                continue  # covered by a snapshot installed in this same Ready
            assert e.index == self.applied_index + 1, (e.index, self.applied_index)
            self.applied_index = e.index
            self.sim.check_apply(self, e.index, e.term, e.data, e.type)
            if e.type == EntryType.CONF_CHANGE:
                cs = self.node.apply_conf_change(decode_conf_change(e.data))
                self.conf_history.append((e.index, cs))
            elif e.data:
                self.sm.append((e.index, e.term, e.data))
                self.sim.on_applied(self, e.data)

    def compact(self, keep: int) -> None:
        """Snapshot the state machine at the applied index and drop older log entries."""
        idx = self.applied_index - keep
        if idx <= self.disk.first_index():
            return
        upto = [x for x in self.sm if x[0] <= idx]
        try:
            self.disk.create_snapshot(idx, self._conf_state_at(idx), repr(upto).encode())
        except SnapshotOutOfDateError:
            return
        self.disk.compact(idx)

    def _conf_state_at(self, idx: int) -> ConfState:
        return [cs for i, cs in self.conf_history if i <= idx][-1]


class Sim:
    def __init__(
        self, seed: int, params: SimParams, log: Callable[[str], None] | None = None
    ) -> None:
        self.seed = seed
        self.params = params
        self.rng = random.Random(seed)
        self.log = log or (lambda s: None)
        # Rare paths on at random (FoundationDB style): one entry per append, tiny windows.
        self.max_size_per_msg = self.rng.choice([1, 100, 512, 1 << 20])
        if params.max_size_per_msg is not None:
            self.max_size_per_msg = params.max_size_per_msg
        self.max_inflight_msgs = self.rng.choice([1, 2, 8, 256])
        self.round = 0
        ids = list(range(1, params.members + 1))
        self.ids = ids
        self.disks = {i: MemoryStorage() for i in ids}
        self.members: dict[int, SimMember] = {}
        for i in ids:
            self.members[i] = SimMember(self, i, self.disks[i], ids)
        self.crashed: dict[int, int] = {}  # member -> round it restarts
        self.partition: list[set[int]] | None = None
        self.partition_until = 0
        self.in_flight: list[tuple[int, int, Message]] = []
        self.seq = 0
        self.faults = True
        # Checker state.
        self.leader_of_term: dict[int, int] = {}
        self.entry_at: dict[tuple[int, int], tuple[int, bytes]] = {}
        self.prev_term_at: dict[tuple[int, int], int] = {}
        self.applied_at: dict[int, tuple[int, bytes]] = {}
        self.max_committed = (0, 0)  # (index, term) known committed
        self.next_proposal = 0
        self.acked: dict[bytes, int] = {}  # proposal -> index where its proposer applied it
        self.proposed_by: dict[bytes, int] = {}
        self.reads: dict[bytes, int] = {}  # read ctx -> highest acked index when issued
        self.reads_served = 0
        self.max_acked_index = 0
        self.final_members: list[int] = []
        self.heal_leader_rounds = -1  # rounds from healing to a stable leader

    def fail(self, what: str) -> None:
        raise SafetyViolation(f"seed {self.seed} round {self.round}: {what}")

    # ---- checks ----------------------------------------------------------------------------

    def check_ready(self, m: SimMember, rd: Ready) -> None:
        r = m.node.raft
        if r.state == StateType.LEADER:
            prev = self.leader_of_term.setdefault(r.term, m.id)
            if prev != m.id:
                self.fail(f"two leaders in term {r.term}: {prev} and {m.id}")
            if rd.soft_state is not None:
                self.check_leader_completeness(m)
        log = r.raft_log
        for e in rd.entries:
            key = (e.index, e.term)
            got = self.entry_at.setdefault(key, (e.type, e.data))
            if got != (e.type, e.data):
                self.fail(f"log matching: two entries at index {e.index} term {e.term}")
            # Log matching, whole prefixes, per step: if every (index, term) always follows the
            # same predecessor term, logs that agree at an entry agree on all before it.
            if e.index - 1 >= log.first_index() - 1:
                prev = log.term_or_zero(e.index - 1)
                if self.prev_term_at.setdefault(key, prev) != prev:
                    self.fail(
                        f"log matching: entry {e.term}/{e.index} follows term {prev} on member "
                        f"{m.id} but term {self.prev_term_at[key]} elsewhere"
                    )
        if rd.hard_state is not None and rd.hard_state.commit > self.max_committed[0]:
            c = rd.hard_state.commit
            self.max_committed = (c, r.raft_log.term_or_zero(c))

    def check_leader_completeness(self, m: SimMember) -> None:
        idx, term = self.max_committed
        if idx == 0:
            return
        log = m.node.raft.raft_log
        if idx < log.first_index() - 1:
            return  # covered by its snapshot
        try:
            got = log.term(idx)
        except CompactedError:
            return
        if got != term:
            self.fail(
                f"leader completeness: new leader {m.id} (term {m.node.raft.term}) has term "
                f"{got} at committed index {idx}, want {term}"
            )

    def check_apply(self, m: SimMember, index: int, term: int, data: bytes, typ: int) -> None:
        got = self.applied_at.setdefault(index, (term, data))
        if got != (term, data):
            self.fail(
                f"state machine safety: member {m.id} applies (term {term}, {data!r}) at "
                f"{index}, another applied (term {got[0]}, {got[1]!r})"
            )

    def check_snapshot(self, m: SimMember, index: int) -> None:
        for i, t, d in m.sm:
            got = self.applied_at.setdefault(i, (t, d))
            if got != (t, d):
                self.fail(f"snapshot at {index} on {m.id} disagrees at index {i}")

    def check_read_state(self, m: SimMember, index: int, ctx: bytes) -> None:
        floor = self.reads.pop(ctx, None)
        if floor is None:
            return  # a duplicate delivery of an already served read
        self.reads_served += 1
        if index < floor:
            self.fail(f"read index {index} on {m.id} is below acknowledged index {floor}")

    def on_applied(self, m: SimMember, data: bytes) -> None:
        if self.proposed_by.get(data) == m.id and data not in self.acked:
            self.acked[data] = m.applied_index
            self.max_acked_index = max(self.max_acked_index, m.applied_index)

    def check_logs_match(self) -> None:
        """Pairwise: where two logs hold the same (index, term), their prefixes agree."""
        logs = {}
        for i, m in self.members.items():
            log = m.node.raft.raft_log
            ents = log.all_entries()
            logs[i] = {e.index: e for e in ents}
        items = sorted(logs.items())
        for a in range(len(items)):
            for b in range(a + 1, len(items)):
                la, lb = items[a][1], items[b][1]
                common = sorted(set(la) & set(lb), reverse=True)
                for k, idx in enumerate(common):
                    if la[idx].term == lb[idx].term:
                        for j in common[k:]:
                            if la[j] != lb[j]:
                                self.fail(
                                    f"log matching: members {items[a][0]} and {items[b][0]} "
                                    f"agree at {idx} but differ at {j}"
                                )
                        break

    # ---- the world -------------------------------------------------------------------------

    def live(self) -> list[SimMember]:
        return [m for i, m in self.members.items() if i not in self.crashed]

    def reachable(self, a: int, b: int) -> bool:
        if self.partition is None:
            return True
        return any(a in g and b in g for g in self.partition)

    def send(self, msgs: list[Message]) -> None:
        p = self.params
        for msg in msgs:
            if self.params.use_codec:
                msg = decode_message(encode_message(msg))
            copies = 1
            if self.faults:
                if self.rng.random() < p.p_drop:
                    self.lost(msg)
                    continue
                if self.rng.random() < p.p_dup:
                    copies = 2
            for _ in range(copies):
                # Healed, the network is fast next to a tick (as in a real deployment, where a
                # round trip takes far less than the 100 ms tick): delivery within the round.
                delay = self.rng.randint(1, p.delay_rounds_max) if self.faults else 0
                self.seq += 1
                self.in_flight.append((self.round + delay, self.seq, msg))

    def lost(self, msg: Message) -> None:
        if msg.type == MessageType.MSG_SNAP and msg.from_ not in self.crashed:
            sender = self.members.get(msg.from_)
            if sender is not None:
                sender.node.report_snapshot(msg.to, failed=True)

    def deliver(self) -> None:
        due = [x for x in self.in_flight if x[0] <= self.round]
        self.in_flight = [x for x in self.in_flight if x[0] > self.round]
        if self.faults:
            self.rng.shuffle(due)
        for _, _, msg in due:
            if (
                msg.to in self.crashed
                or msg.to not in self.members
                or not self.reachable(msg.from_, msg.to)
            ):
                self.lost(msg)
                continue
            try:
                self.members[msg.to].node.step(msg)
            except ProposalDroppedError:
                pass  # a forwarded proposal that found no leader: the client times out
            except Exception as err:
                if type(err).__name__ == "StepPeerNotFoundError":
                    continue  # a response from a member removed meanwhile
                raise
            if msg.type == MessageType.MSG_SNAP:
                sender = self.members.get(msg.from_)
                if sender is not None and msg.from_ not in self.crashed:
                    sender.node.report_snapshot(msg.to, failed=False)

    def crash(self, member_id: int, until: int) -> None:
        self.log(f"r{self.round}: crash {member_id} until r{until}")
        self.crashed[member_id] = until
        # A process that dies loses what it had not yet sent: drop part of its in-flight mail.
        self.in_flight = [
            x for x in self.in_flight if x[2].from_ != member_id or self.rng.random() < 0.5
        ]

    def restart(self, member_id: int) -> None:
        self.log(f"r{self.round}: restart {member_id}")
        del self.crashed[member_id]
        disk = self.disks[member_id]
        # A member that crashed before its first Ready persisted nothing: it bootstraps again.
        peers = self.ids if disk.last_index() == 0 else None
        self.members[member_id] = SimMember(self, member_id, disk, peers)

    def nemesis(self) -> None:
        p = self.params
        rng = self.rng
        for member_id, until in list(self.crashed.items()):
            if self.round >= until:
                self.restart(member_id)
        if self.partition is not None and self.round >= self.partition_until:
            self.log(f"r{self.round}: heal partition")
            self.partition = None
        if rng.random() < p.p_crash:
            victim = rng.choice(self.ids)
            if victim not in self.crashed:
                self.crash(victim, self.round + rng.randint(1, p.crash_rounds_max))
        if rng.random() < p.p_crash_leader:
            leaders = [m.id for m in self.live() if m.node.raft.state == StateType.LEADER]
            if leaders:
                self.crash(leaders[0], self.round + rng.randint(1, p.crash_rounds_max))
        if self.partition is None and rng.random() < p.p_partition and len(self.ids) > 1:
            ids = self.ids[:]
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            self.partition = [set(ids[:cut]), set(ids[cut:])]
            self.partition_until = self.round + rng.randint(1, p.partition_rounds_max)
            self.log(f"r{self.round}: partition {self.partition} until r{self.partition_until}")

    def clients(self) -> None:
        p = self.params
        rng = self.rng
        live = self.live()
        if not live:
            return
        if rng.random() < p.p_propose:
            m = rng.choice(live)
            data = b"p%d" % self.next_proposal
            self.next_proposal += 1
            try:
                m.node.propose(data)
                self.proposed_by[data] = m.id
            except ProposalDroppedError:
                pass
        if rng.random() < p.p_read:
            m = rng.choice(live)
            ctx = b"r%d" % self.next_proposal
            self.next_proposal += 1
            self.reads[ctx] = self.max_acked_index
            m.node.read_index(ctx)
        if rng.random() < p.p_transfer:
            leaders = [m for m in live if m.node.raft.state == StateType.LEADER]
            if leaders:
                target = rng.choice(sorted(leaders[0].node.raft.prs.voters))
                self.log(f"r{self.round}: transfer leadership {leaders[0].id} -> {target}")
                leaders[0].node.transfer_leader(target)
        if rng.random() < p.p_compact:
            m = rng.choice(live)
            m.compact(keep=rng.randint(0, 5))
        if rng.random() < p.p_membership:
            self.membership_change(live)

    def membership_change(self, live: list[SimMember]) -> None:
        """Remove a voter and later add it back as a learner, then promote it."""
        leaders = [m for m in live if m.node.raft.state == StateType.LEADER]
        if not leaders:
            return
        leader = leaders[0]
        prs = leader.node.raft.prs
        rng = self.rng
        learners = sorted(prs.learners)
        if learners:
            cc = ConfChange(ConfChangeType.ADD_NODE, rng.choice(learners))
        elif len(prs.voters) > 2 and rng.random() < 0.5:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(sorted(prs.voters)))
        else:
            missing = [i for i in self.ids if i not in prs.progress]
            if not missing:
                return
            cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, rng.choice(missing))
        self.log(f"r{self.round}: propose {cc.type.name} {cc.node_id} on {leader.id}")
        with contextlib.suppress(ProposalDroppedError):
            leader.node.propose_conf_change(cc)

    def step_round(self) -> None:
        self.round += 1
        if self.faults:
            self.nemesis()
            self.clients()
        for m in self.live():
            m.node.tick()
        self.deliver()
        self.handle_readies()
        # Healed: keep delivering until this round's exchanges are done (bounded).
        for _ in range(50):
            if self.faults or not any(x[0] <= self.round for x in self.in_flight):
                break
            self.deliver()
            self.handle_readies()

    def handle_readies(self) -> None:
        for m in self.live():
            self.send(m.handle_ready())
            if m.died:
                self.crash(m.id, self.round + self.rng.randint(1, self.params.crash_rounds_max))

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> None:
        p = self.params
        for _ in range(p.fault_rounds):
            self.step_round()
            if self.round % 25 == 0:
                self.check_logs_match()
        self.heal()

    def heal(self) -> None:
        self.log(f"r{self.round}: heal everything")
        self.faults = False
        self.partition = None
        for member_id in list(self.crashed):
            self.restart(member_id)
        start = self.round
        leader_round = None
        for _ in range(self.params.heal_rounds_max):
            self.step_round()
            leader = self.stable_leader()
            if leader is not None and leader_round is None:
                leader_round = self.round
                self.heal_leader_rounds = self.round - start
            if leader_round is None and self.round - start > 20 * self.params.election_tick:
                self.fail(
                    "no stable leader within 20 election timeouts of healing: "
                    + "; ".join(f"{m.id}: {m.node.status()}" for m in self.members.values())
                )
            if leader is not None and self.converged(leader):
                self.check_logs_match()
                self.check_final()
                self.check_reads_served()
                return
        self.fail(
            f"no convergence within {self.params.heal_rounds_max} rounds of healing "
            f"(leader appeared at round {leader_round}, healing began at {start}): "
            + "; ".join(f"{m.id}: {m.node.status()}" for m in self.members.values())
        )

    def stable_leader(self) -> SimMember | None:
        leaders = [m for m in self.members.values() if m.node.raft.state == StateType.LEADER]
        if len(leaders) != 1:
            return None
        lead = leaders[0]
        if all(self.members[i].node.raft.lead == lead.id for i in lead.node.raft.prs.voters):
            return lead
        return None

    def converged(self, leader: SimMember) -> bool:
        log = leader.node.raft.raft_log
        target = log.committed
        if target != log.last_index():
            return False  # the leader's own entries (at least its empty one) must commit
        self.final_members = sorted(leader.node.raft.prs.progress)
        return all(
            self.members[i].applied_index == target
            and self.members[i].node.raft.raft_log.committed == target
            for i in self.final_members
        )

    def check_reads_served(self) -> None:
        """On a healthy cluster a read on any member is answered within a few heartbeats. A
        leader change drops the reads it was confirming (as in etcd), so like a server the
        client asks again after a timeout of two election timeouts."""
        retry_rounds = 2 * self.params.election_tick
        waiting = {i: b"" for i in self.final_members}
        for attempt in range(5):
            for i in waiting:
                ctx = b"final-read-%d-%d" % (i, attempt)
                waiting[i] = ctx
                self.reads[ctx] = self.max_acked_index
                self.members[i].node.read_index(ctx)
            for _ in range(retry_rounds):
                self.step_round()
                waiting = {i: c for i, c in waiting.items() if c in self.reads}
                if not waiting:
                    return
        self.fail(f"reads not served on a healthy cluster after 5 attempts: {waiting}")

    def check_final(self) -> None:
        """Every acknowledged proposal is applied on every member, in one order."""
        ref = None
        for m in (self.members[i] for i in self.final_members):
            seq = [(i, d) for i, _, d in m.sm]
            if ref is None:
                ref = seq
            elif seq != ref:
                self.fail(f"member {m.id} applied a different sequence")
            have = {d for _, d in seq}
            missing = [d for d in self.acked if d not in have]
            if missing:
                self.fail(f"member {m.id} lacks acknowledged proposals {missing[:5]}")


def run_seed(seed: int, params: SimParams, verbose: bool = False) -> Sim:
    sim = Sim(seed, params, log=print if verbose else None)
    sim.run()
    return sim


def replay_command(seed: int, params: SimParams) -> str:
    extra = " --membership" if params.p_membership else ""
    extra += " --chaos" if params.chaos else ""
    extra += " --leader-sends-first" if params.leader_sends_first else ""
    extra += " --codec" if params.use_codec else ""
    extra += f" --rounds {params.fault_rounds}" if params.fault_rounds != 300 else ""
    return f"python -m tests.raft_sim --seed {seed} --members {params.members}{extra} --verbose"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the Raft simulator for one or more seeds.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="run seeds seed..seed+N-1")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--membership", action="store_true", help="also change membership")
    ap.add_argument("--codec", action="store_true", help="encode/decode every message")
    ap.add_argument("--chaos", action="store_true", help="the CHAOS fault schedule")
    ap.add_argument(
        "--leader-sends-first",
        action="store_true",
        help="the leader sends before persisting and may crash in between",
    )
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    params = dataclasses.replace(
        CHAOS if args.chaos else SimParams(),
        members=args.members,
        fault_rounds=args.rounds,
        p_membership=0.02 if args.membership else 0.0,
        use_codec=args.codec,
        leader_sends_first=args.leader_sends_first,
        p_crash_mid_ready=0.05 if args.leader_sends_first else 0.0,
    )
    acked = leader_rounds_max = 0
    for seed in range(args.seed, args.seed + args.seeds):
        try:
            sim = run_seed(seed, params, args.verbose)
        except SafetyViolation as err:
            print(f"FAIL {err}\nreplay: {replay_command(seed, params)}")
            return 1
        acked += len(sim.acked)
        leader_rounds_max = max(leader_rounds_max, sim.heal_leader_rounds)
        if args.verbose or args.seeds == 1:
            print(
                f"seed {seed}: ok, {sim.round} rounds, {len(sim.acked)} acknowledged, "
                f"{sim.reads_served} reads, {len(sim.leader_of_term)} terms with a leader, "
                f"leader {sim.heal_leader_rounds} rounds after healing"
            )
    print(
        f"OK {args.seeds} seeds from {args.seed}: {acked} proposals acknowledged; at most "
        f"{leader_rounds_max} rounds from healing to a stable leader"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
