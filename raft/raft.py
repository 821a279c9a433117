"""The Raft protocol as a pure step function, after etcd-io/raft's raft.go.

Theory of operation: a Raft object changes only in `step(message)` and `tick()`. Every output
is queued: messages in `msgs`, read states in `read_states`, log changes in `raft_log` (its
unstable part); RawNode collects them into a Ready. Roles are functions: `_step` points at
step_leader, step_candidate or step_follower, `_tick` at tick_election or tick_heartbeat.

Protocol choices (etcd's): pre-vote, check-quorum with the leader-lease rule (a member that heard
from a leader within an election timeout ignores vote requests), commit only by counting
replicas of an entry of the current term (Figure 8), ReadIndex confirmed by a heartbeat round,
single-step membership changes applied when committed entries are applied (at most one
unapplied change at a time), leader transfer by MsgTimeoutNow.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from raft.errors import (
    CompactedError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from raft.log import RaftLog
from raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress, ProgressTracker, VoteResult
from raft.readonly import ReadOnly
from raft.storage import NO_LIMIT
from raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SoftState,
    StateType,
    vote_resp_type,
)

if TYPE_CHECKING:
    from raft.storage import Storage

# Plain ints for the hot path: comparing with an IntEnum member costs an attribute lookup.
MSG_HUP = int(MessageType.MSG_HUP)
MSG_BEAT = int(MessageType.MSG_BEAT)
MSG_PROP = int(MessageType.MSG_PROP)
MSG_APP = int(MessageType.MSG_APP)
MSG_APP_RESP = int(MessageType.MSG_APP_RESP)
MSG_VOTE = int(MessageType.MSG_VOTE)
MSG_VOTE_RESP = int(MessageType.MSG_VOTE_RESP)
MSG_SNAP = int(MessageType.MSG_SNAP)
MSG_HEARTBEAT = int(MessageType.MSG_HEARTBEAT)
MSG_HEARTBEAT_RESP = int(MessageType.MSG_HEARTBEAT_RESP)
MSG_UNREACHABLE = int(MessageType.MSG_UNREACHABLE)
MSG_SNAP_STATUS = int(MessageType.MSG_SNAP_STATUS)
MSG_CHECK_QUORUM = int(MessageType.MSG_CHECK_QUORUM)
MSG_TRANSFER_LEADER = int(MessageType.MSG_TRANSFER_LEADER)
MSG_TIMEOUT_NOW = int(MessageType.MSG_TIMEOUT_NOW)
MSG_READ_INDEX = int(MessageType.MSG_READ_INDEX)
MSG_READ_INDEX_RESP = int(MessageType.MSG_READ_INDEX_RESP)
MSG_PRE_VOTE = int(MessageType.MSG_PRE_VOTE)
MSG_PRE_VOTE_RESP = int(MessageType.MSG_PRE_VOTE_RESP)
ENTRY_NORMAL = int(EntryType.NORMAL)
ENTRY_CONF_CHANGE = int(EntryType.CONF_CHANGE)

FOLLOWER = StateType.FOLLOWER
CANDIDATE = StateType.CANDIDATE
LEADER = StateType.LEADER
PRE_CANDIDATE = StateType.PRE_CANDIDATE

# The context of a vote request that a leader transfer started: it overrides the lease rule.
CAMPAIGN_TRANSFER = b"CampaignTransfer"
CAMPAIGN_PRE_ELECTION = "pre-election"
CAMPAIGN_ELECTION = "election"


@dataclasses.dataclass
class Config:
    """A member's parameters. election_tick > heartbeat_tick; etcd uses 10 and 1."""

    id: int
    storage: Storage
    rng: random.Random
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_committed_size_per_ready: int = NO_LIMIT
    # The leader drops proposals once the payload bytes of its uncommitted entries would pass
    # this (etcd's MaxUncommittedEntriesSize): a leader that lost its quorum stops growing.
    max_uncommitted_entries_size: int = NO_LIMIT
    max_inflight_msgs: int = 256
    pre_vote: bool = True
    check_quorum: bool = True
    disable_proposal_forwarding: bool = False

    def validate(self) -> None:
        if self.id == NONE:
            raise ValueError("cannot use none as id")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max inflight messages must be greater than 0")


class Raft:
    def __init__(self, c: Config) -> None:
        c.validate()
        self.id = c.id
        self.raft_log = RaftLog(c.storage, c.max_committed_size_per_ready)
        hs, cs = c.storage.initial_state()
        self.max_msg_size = c.max_size_per_msg
        self.max_inflight = c.max_inflight_msgs
        self.max_uncommitted_size = c.max_uncommitted_entries_size
        # Invariant: payload bytes of this leader's entries not yet handed out as committed.
        self.uncommitted_size = 0
        self.prs = ProgressTracker(c.max_inflight_msgs)
        self.election_timeout = c.election_tick
        self.heartbeat_timeout = c.heartbeat_tick
        self.check_quorum = c.check_quorum
        self.pre_vote = c.pre_vote
        self.disable_proposal_forwarding = c.disable_proposal_forwarding
        self.rng = c.rng

        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = FOLLOWER
        self.is_learner = False
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.lead_transferee = NONE
        # Invariant: at most one configuration change sits in the log unapplied; this is the
        # index of the latest one (or of the last entry when this member became leader).
        self.pending_conf_index = 0
        self.pending_read_index_messages: list[Message] = []
        # Configuration changes up to this index are already in prs (bootstrap applies them).
        self.conf_applied_index = 0
        self.read_only = ReadOnly()
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self._step: Callable[[Message], None] = self.step_follower
        self._tick: Callable[[], None] = self.tick_election

        self.restore_conf_state(cs)
        if hs != HardState():
            self.load_state(hs)
        if c.applied > 0:
            self.raft_log.applied_to(c.applied)
        self.become_follower(self.term, NONE)

    # ---- state accessors -------------------------------------------------------------------

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.raft_log.committed)

    def load_state(self, hs: HardState) -> None:
        log = self.raft_log
        if hs.commit < log.committed or hs.commit > log.last_index():
            raise AssertionError(
                f"{self.id} state.commit {hs.commit} is out of range "
                f"[{log.committed}, {log.last_index()}]"
            )
        log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def promotable(self) -> bool:
        pr = self.prs.progress.get(self.id)
        return pr is not None and not pr.is_learner and not self.raft_log.has_pending_snapshot()

    def restore_conf_state(self, cs: ConfState) -> None:
        self.prs = ProgressTracker(self.max_inflight)
        last = self.raft_log.last_index()
        for v in cs.voters:
            self._add_progress(v, False, last)
        for v in cs.learners:
            self._add_progress(v, True, last)
        me = self.prs.progress.get(self.id)
        self.is_learner = me is not None and me.is_learner

    def _add_progress(self, member: int, is_learner: bool, last: int) -> None:
        pr = Progress(0, last + 1, self.max_inflight, is_learner)
        pr.recent_active = True
        self.prs.progress[member] = pr
        (self.prs.learners if is_learner else self.prs.voters).add(member)

    # ---- sending ---------------------------------------------------------------------------

    def send_append(self, to: int) -> None:
        self.maybe_send_append(to, True)

    def maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send to `to` an append of the entries it lacks (or a snapshot if they are
        compacted); False if nothing was sent (flow control paused, or nothing to send)."""
        pr = self.prs.progress[to]
        state = pr.state
        # Flow control (Progress.is_paused, inlined: this is the hottest path).
        if state == REPLICATE:
            if len(pr.inflights) >= pr.max_inflight:
                return False
        elif state != PROBE or pr.probe_sent:
            return False
        log = self.raft_log
        nxt = pr.next
        if not send_if_empty and nxt > log.last_index():
            return False
        try:
            log_term = log.term(nxt - 1)
            ents = log.entries(nxt, self.max_msg_size)
        except (CompactedError, UnavailableError):
            return self._send_snapshot(to, pr)
        if ents:
            if state == REPLICATE:
                last = ents[-1].index
                pr.next = last + 1
                pr.inflights.append(last)
            else:
                pr.probe_sent = True
        elif not send_if_empty:
            return False
        self.msgs.append(
            Message(MSG_APP, to, self.id, self.term, log_term, nxt - 1, tuple(ents), log.committed)
        )
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        assert snap.index != 0, "need non-empty snapshot"
        pr.become_snapshot(snap.index)
        self.msgs.append(Message(MSG_SNAP, to, self.id, self.term, snapshot=snap))
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        # A follower may not have the leader's committed entries yet: never tell it to commit
        # beyond what it is known to match.
        commit = min(self.prs.progress[to].match, self.raft_log.committed)
        self.msgs.append(Message(MSG_HEARTBEAT, to, self.id, self.term, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for member in self.prs.progress:
            if member != self.id:
                self.maybe_send_append(member, True)

    def bcast_heartbeat(self) -> None:
        ctx = self.read_only.last_pending_request_ctx()
        for member in self.prs.progress:
            if member != self.id:
                self.send_heartbeat(member, ctx)

    def send_timeout_now(self, to: int) -> None:
        self.msgs.append(Message(MSG_TIMEOUT_NOW, to, self.id, self.term))

    # ---- committing and appending ----------------------------------------------------------

    def maybe_commit(self) -> bool:
        return self.raft_log.maybe_commit(self.prs.committed(), self.term)

    def append_entry(self, ents: tuple[Entry, ...]) -> None:
        li = self.raft_log.last_index()
        term = self.term
        stamped = [Entry(term, li + 1 + i, e.type, e.data) for i, e in enumerate(ents)]
        li = self.raft_log.append(stamped)
        if self.prs.is_singleton():
            # A lone voter commits at once, in the Ready that hands the entries over for
            # persistence; the application fsyncs before applying them (etcd#14370).
            self.prs.progress[self.id].maybe_update(li)
            self.maybe_commit()
        # With other voters the leader counts its own entries only once they are persisted
        # (on_persisted): it may then send them before its own write completes (Raft thesis
        # §10.2.1) without ever counting an entry that is not on its disk.

    def persisted_index(self) -> int:
        """The last index on this member's disk: storage only holds persisted entries."""
        u = self.raft_log.unstable
        if u.entries or u.snapshot is not None:
            return u.offset - 1
        return self.raft_log.storage.last_index()

    def on_persisted(self) -> None:
        """The application persisted what a Ready handed it (RawNode.advance)."""
        if self.state != LEADER:
            return
        pr = self.prs.progress.get(self.id)
        if pr is None or not pr.maybe_update(self.persisted_index()):
            return
        if self.maybe_commit():
            self.release_pending_read_index_messages()
            self.bcast_append()

    # ---- role changes ----------------------------------------------------------------------

    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.prs.reset_votes()
        last = self.raft_log.last_index()
        own_match = last if self.prs.is_singleton() else self.persisted_index()
        for member, pr in self.prs.progress.items():
            fresh = Progress(0, last + 1, self.max_inflight, pr.is_learner)
            if member == self.id:
                fresh.match = own_match
            self.prs.progress[member] = fresh
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()

    def reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )

    def become_follower(self, term: int, lead: int) -> None:
        self._step = self.step_follower
        self.reset(term)
        self._tick = self.tick_election
        self.lead = lead
        self.state = FOLLOWER

    def become_candidate(self) -> None:
        assert self.state != LEADER, "invalid transition [leader -> candidate]"
        self._step = self.step_candidate
        self.reset(self.term + 1)
        self._tick = self.tick_election
        self.vote = self.id
        self.state = CANDIDATE

    def become_pre_candidate(self) -> None:
        assert self.state != LEADER, "invalid transition [leader -> pre-candidate]"
        # A pre-candidate changes neither its term nor its vote.
        self._step = self.step_candidate
        self.prs.reset_votes()
        self._tick = self.tick_election
        self.lead = NONE
        self.state = PRE_CANDIDATE

    def become_leader(self) -> None:
        assert self.state != FOLLOWER, "invalid transition [follower -> leader]"
        self._step = self.step_leader
        self.reset(self.term)
        self._tick = self.tick_heartbeat
        self.lead = self.id
        self.state = LEADER
        self.prs.progress[self.id].become_replicate()
        # Conservatively, any unapplied entry may be a configuration change: no new change
        # until everything up to here is applied.
        self.pending_conf_index = self.raft_log.last_index()
        self.append_entry((Entry(),))

    # ---- elections -------------------------------------------------------------------------

    def hup(self, campaign_type: str | bytes) -> None:
        if self.state == LEADER or not self.promotable():
            return
        log = self.raft_log
        lo = max(log.applied, self.conf_applied_index) + 1
        if log.committed >= lo:
            pending = log.slice(max(lo, log.first_index()), log.committed + 1)
            if any(e.type == ENTRY_CONF_CHANGE for e in pending):
                return  # a committed configuration change must be applied first
        self.campaign(campaign_type)

    def campaign(self, campaign_type: str | bytes) -> None:
        if campaign_type == CAMPAIGN_PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = MSG_PRE_VOTE
            term = self.term + 1  # the term it would campaign at; its own term is unchanged
        else:
            self.become_candidate()
            vote_msg = MSG_VOTE
            term = self.term
        if self.poll(self.id, vote_resp_type(vote_msg), True) == VoteResult.WON:
            # A single voter wins at once.
            if campaign_type == CAMPAIGN_PRE_ELECTION:
                self.campaign(CAMPAIGN_ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if campaign_type == CAMPAIGN_TRANSFER else b""
        last = self.raft_log.last_index()
        last_term = self.raft_log.last_term()
        for member in sorted(self.prs.voters):
            if member != self.id:
                self.msgs.append(
                    Message(vote_msg, member, self.id, term, last_term, last, context=ctx)
                )

    def poll(self, member: int, t: int, granted: bool) -> VoteResult:
        self.prs.record_vote(member, granted)
        return self.prs.tally_votes()[2]

    # ---- step ------------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message. Raises ProposalDroppedError for a proposal it cannot take."""
        t = m.type
        if m.term == self.term and t != MSG_HUP and t != MSG_VOTE and t != MSG_PRE_VOTE:
            self._step(m)  # the common case: our term (or local), handled by the role
            return
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type == MSG_VOTE or m.type == MSG_PRE_VOTE:
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    return  # leader lease: ignore a disruptive vote request
            if m.type == MSG_PRE_VOTE:
                pass  # never change term on a pre-vote request
            elif m.type == MSG_PRE_VOTE_RESP and not m.reject:
                pass  # the term it carries is ours-to-be; we take it when we win
            elif m.type in (MSG_APP, MSG_HEARTBEAT, MSG_SNAP):
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            self._step_stale(m)
            return

        if t == MSG_HUP:
            self.hup(CAMPAIGN_PRE_ELECTION if self.pre_vote else CAMPAIGN_ELECTION)
        elif t in (MSG_VOTE, MSG_PRE_VOTE):
            self._step_vote_request(m)
        else:
            self._step(m)

    def _step_stale(self, m: Message) -> None:
        if (self.check_quorum or self.pre_vote) and m.type in (MSG_HEARTBEAT, MSG_APP):
            # A leader cut off by a partition may be stuck at a stale term (its own pre-votes
            # cannot win while we ignore it): tell it our term so it steps down.
            self.msgs.append(Message(MSG_APP_RESP, m.from_, self.id, self.term))
        elif m.type == MSG_PRE_VOTE:
            self.msgs.append(Message(MSG_PRE_VOTE_RESP, m.from_, self.id, self.term, reject=True))
        # Otherwise ignore the stale message.

    def _step_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MSG_PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.raft_log.is_up_to_date(m.index, m.log_term):
            # The response carries the request's term: for a pre-vote it is the future term.
            self.msgs.append(Message(vote_resp_type(m.type), m.from_, self.id, m.term))
            if m.type == MSG_VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self.msgs.append(
                Message(vote_resp_type(m.type), m.from_, self.id, self.term, reject=True)
            )

    def step_leader(self, m: Message) -> None:
        t = m.type
        if t == MSG_APP_RESP:  # the most frequent message first
            pr = self.prs.progress.get(m.from_)
            if pr is not None:
                self._leader_app_resp(m, pr)
            return
        if t == MSG_PROP:
            self._leader_propose(m)
            return
        if t == MSG_BEAT:
            self.bcast_heartbeat()
            return
        if t == MSG_CHECK_QUORUM:
            self._leader_check_quorum()
            return
        if t == MSG_READ_INDEX:
            self._leader_read_index(m)
            return
        pr = self.prs.progress.get(m.from_)
        if pr is None:
            return
        if t == MSG_HEARTBEAT_RESP:
            self._leader_heartbeat_resp(m, pr)
        elif t == MSG_SNAP_STATUS:
            if pr.state == SNAPSHOT:
                if m.reject:
                    pr.pending_snapshot = 0
                pr.become_probe()
                # Wait a heartbeat interval before probing: the follower may still be applying.
                pr.probe_sent = True
        elif t == MSG_UNREACHABLE:
            if pr.state == REPLICATE:
                pr.become_probe()
        elif t == MSG_TRANSFER_LEADER:
            self._leader_transfer(m, pr)

    def _leader_propose(self, m: Message) -> None:
        assert m.entries, "stepped empty MsgProp"
        if self.id not in self.prs.progress:
            raise ProposalDroppedError("this member was removed from the configuration")
        if self.lead_transferee != NONE:
            raise ProposalDroppedError("a leader transfer is in progress")
        ents = m.entries
        if self.max_uncommitted_size < NO_LIMIT:
            self._check_uncommitted_size(ents)
        if any(e.type == ENTRY_CONF_CHANGE for e in ents):
            ents = self._filter_conf_changes(ents)
        self.append_entry(ents)
        self.bcast_append()

    def _check_uncommitted_size(self, ents: tuple[Entry, ...]) -> None:
        size = sum(len(e.data) for e in ents)
        # One proposal is always let through, however big, so that progress is possible.
        if self.uncommitted_size > 0 and self.uncommitted_size + size > self.max_uncommitted_size:
            raise ProposalDroppedError("too many uncommitted entries")
        self.uncommitted_size += size

    def reduce_uncommitted_size(self, committed: list[Entry]) -> None:
        """Committed entries were handed to the application: they no longer count."""
        if self.state != LEADER:
            return
        size = sum(len(e.data) for e in committed)
        self.uncommitted_size = max(0, self.uncommitted_size - size)

    def _filter_conf_changes(self, ents: tuple[Entry, ...]) -> tuple[Entry, ...]:
        out = list(ents)
        li = self.raft_log.last_index()
        for i, e in enumerate(out):
            if e.type != ENTRY_CONF_CHANGE:
                continue
            if self.pending_conf_index > self.raft_log.applied:
                # Another change is not yet applied: replace this one by an empty entry
                # (the proposer learns by never seeing it applied).
                out[i] = Entry(type=ENTRY_NORMAL)
            else:
                self.pending_conf_index = li + i + 1
        return tuple(out)

    def _leader_check_quorum(self) -> None:
        me = self.prs.progress.get(self.id)
        if me is not None:
            me.recent_active = True  # a leader always counts itself as active
        if not self.prs.quorum_active():
            self.become_follower(self.term, NONE)
        for member, pr in self.prs.progress.items():
            if member != self.id:
                pr.recent_active = False

    def _leader_read_index(self, m: Message) -> None:
        if self.prs.is_singleton():
            self._respond_read_index(m, self.raft_log.committed)
            return
        if not self.committed_entry_in_current_term():
            # The commit index of a new leader may lag; serve once its first entry commits.
            self.pending_read_index_messages.append(m)
            return
        self._add_read_request(m)
        self._maybe_start_read_round()

    def _add_read_request(self, m: Message) -> None:
        self.read_only.add_request(self.raft_log.committed, m)
        self.read_only.recv_ack(self.id, m.context)

    def _maybe_start_read_round(self) -> None:
        """Confirm leadership for every waiting read with one heartbeat round, unless a round
        is already in flight: reads arriving meanwhile wait for it to end and then share the
        next round (a round must start after a read arrives to serve it)."""
        ro = self.read_only
        if ro.round_ctx is not None or not ro.queue:
            return
        ctx = ro.queue[-1]
        ro.round_ctx = ctx
        for member in self.prs.progress:
            if member != self.id:
                self.send_heartbeat(member, ctx)

    def committed_entry_in_current_term(self) -> bool:
        return self.raft_log.term_or_zero(self.raft_log.committed) == self.term

    def release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages or not self.committed_entry_in_current_term():
            return
        pending = self.pending_read_index_messages
        self.pending_read_index_messages = []
        for m in pending:
            self._add_read_request(m)
        self._maybe_start_read_round()

    def _respond_read_index(self, req: Message, index: int) -> None:
        if req.from_ == NONE or req.from_ == self.id:
            self.read_states.append(ReadState(index, req.context))
        else:
            self.msgs.append(
                Message(
                    MSG_READ_INDEX_RESP,
                    req.from_,
                    self.id,
                    self.term,
                    index=index,
                    context=req.context,
                )
            )

    def _leader_app_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                # Skip every entry of ours whose term is above the follower's term at the
                # hint: they cannot match (fast back-tracking).
                next_probe = self.raft_log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self.send_append(m.from_)
            return
        old_paused = pr.is_paused()
        n = m.index
        if pr.match < n:  # Progress.maybe_update, inlined
            pr.match = n
            pr.probe_sent = False
            if pr.next <= n:
                pr.next = n + 1
        else:
            if pr.next <= n:
                pr.next = n + 1
            return
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == REPLICATE:
            pr.free_le(m.index)
        if self.maybe_commit():
            self.release_pending_read_index_messages()
            self.bcast_append()
        elif old_paused:
            self.send_append(m.from_)
        # Fill the window: send every append the flow control now allows.
        while self.maybe_send_append(m.from_, False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.raft_log.last_index():
            self.send_timeout_now(m.from_)

    def _leader_heartbeat_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == REPLICATE and pr.inflights_full():
            pr.inflights.popleft()  # let one append through: the follower is alive
        if pr.match < self.raft_log.last_index():
            self.send_append(m.from_)
        if not m.context:
            return
        acks = self.read_only.recv_ack(m.from_, m.context)
        if acks is None or not self.prs.acks_won(acks):
            return
        for req, index in self.read_only.advance(m.context):
            self._respond_read_index(req, index)
        # The acknowledged context covers the round in flight if it was at or after it.
        ro = self.read_only
        if ro.round_ctx is not None and ro.round_ctx not in ro.pending:
            ro.round_ctx = None
        self._maybe_start_read_round()

    def _leader_transfer(self, m: Message, pr: Progress) -> None:
        if pr.is_learner:
            return
        transferee = m.from_
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return  # already under way
            self.abort_leader_transfer()
        if transferee == self.id:
            return
        # The transfer must finish within an election timeout.
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if pr.match == self.raft_log.last_index():
            self.send_timeout_now(transferee)
        else:
            self.send_append(transferee)

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    def step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MSG_PRE_VOTE_RESP if self.state == PRE_CANDIDATE else MSG_VOTE_RESP
        if t == MSG_PROP:
            raise ProposalDroppedError("no leader")
        if t == MSG_APP:
            self.become_follower(m.term, m.from_)
            self.handle_append_entries(m)
        elif t == MSG_HEARTBEAT:
            self.become_follower(m.term, m.from_)
            self.handle_heartbeat(m)
        elif t == MSG_SNAP:
            self.become_follower(m.term, m.from_)
            self.handle_snapshot(m)
        elif t == my_resp:
            result = self.poll(m.from_, t, not m.reject)
            if result == VoteResult.WON:
                if self.state == PRE_CANDIDATE:
                    self.campaign(CAMPAIGN_ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif result == VoteResult.LOST:
                # A pre-candidate's rejection may carry a higher term; take it then.
                self.become_follower(self.term, NONE)

    def step_follower(self, m: Message) -> None:
        t = m.type
        if t == MSG_PROP:
            if self.lead == NONE:
                raise ProposalDroppedError("no leader")
            if self.disable_proposal_forwarding:
                raise ProposalDroppedError("proposal forwarding is disabled")
            self.msgs.append(dataclasses.replace(m, to=self.lead, from_=self.id))
        elif t == MSG_APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self.handle_append_entries(m)
        elif t == MSG_HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self.handle_heartbeat(m)
        elif t == MSG_SNAP:
            self.election_elapsed = 0
            self.lead = m.from_
            self.handle_snapshot(m)
        elif t == MSG_TRANSFER_LEADER:
            if self.lead != NONE:
                self.msgs.append(dataclasses.replace(m, to=self.lead))
        elif t == MSG_TIMEOUT_NOW:
            self.hup(CAMPAIGN_TRANSFER)
        elif t == MSG_READ_INDEX:
            if self.lead != NONE:
                self.msgs.append(dataclasses.replace(m, to=self.lead, from_=self.id))
        elif t == MSG_READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    # ---- follower handlers -----------------------------------------------------------------

    def handle_append_entries(self, m: Message) -> None:
        log = self.raft_log
        if m.index < log.committed:
            self.msgs.append(
                Message(MSG_APP_RESP, m.from_, self.id, self.term, index=log.committed)
            )
            return
        last = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self.msgs.append(Message(MSG_APP_RESP, m.from_, self.id, self.term, index=last))
            return
        # Reject with a hint: the last index whose term is <= the leader's term at m.index,
        # so the leader can skip a whole term of mismatching entries per round trip.
        hint = min(m.index, log.last_index())
        hint = log.find_conflict_by_term(hint, m.log_term)
        hint_term = log.term_or_zero(hint)
        self.msgs.append(
            Message(
                MSG_APP_RESP,
                m.from_,
                self.id,
                self.term,
                hint_term,
                m.index,
                reject=True,
                reject_hint=hint,
            )
        )

    def handle_heartbeat(self, m: Message) -> None:
        self.raft_log.commit_to(m.commit)
        self.msgs.append(
            Message(MSG_HEARTBEAT_RESP, m.from_, self.id, self.term, context=m.context)
        )

    def handle_snapshot(self, m: Message) -> None:
        s = m.snapshot
        assert s is not None
        index = self.raft_log.last_index() if self.restore(s) else self.raft_log.committed
        self.msgs.append(Message(MSG_APP_RESP, m.from_, self.id, self.term, index=index))

    def restore(self, s: Snapshot) -> bool:
        """Install a snapshot from the leader; False if it is stale or already covered."""
        log = self.raft_log
        if s.index <= log.committed:
            return False
        if self.state != FOLLOWER:
            # Only a follower takes snapshots; defensively force a new election.
            self.become_follower(self.term + 1, NONE)
            return False
        if log.match_term(s.index, s.term):
            log.commit_to(s.index)  # we have the entries already: fast-forward the commit
            return False
        log.restore(s)
        # The snapshot's configuration may predate our own addition (a member added after the
        # leader's latest snapshot): we then follow the log until we apply that addition.
        self.restore_conf_state(s.conf_state)
        pr = self.prs.progress.get(self.id)
        if pr is not None:
            pr.maybe_update(pr.next - 1)
        return True

    # ---- ticks -----------------------------------------------------------------------------

    def tick(self) -> None:
        self._tick()

    def tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MSG_HUP, from_=self.id))

    def tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MSG_CHECK_QUORUM, from_=self.id))
            if self.state == LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()  # the transfer took too long
        if self.state != LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(MSG_BEAT, from_=self.id))

    # ---- membership ------------------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed configuration change; called by the application when it applies
        the entry. Idempotent: re-applying a change after a restart is harmless."""
        member = cc.node_id
        prs = self.prs
        if cc.type == ConfChangeType.ADD_NODE:
            pr = prs.progress.get(member)
            if pr is None:
                self._add_progress(member, False, self.raft_log.last_index())
            elif pr.is_learner:
                pr.is_learner = False
                prs.learners.discard(member)
                prs.voters.add(member)
        elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
            if member not in prs.progress:
                self._add_progress(member, True, self.raft_log.last_index())
            # A voter is never demoted to learner by a single-step change.
        elif cc.type == ConfChangeType.REMOVE_NODE:
            prs.progress.pop(member, None)
            prs.voters.discard(member)
            prs.learners.discard(member)
        me = prs.progress.get(self.id)
        self.is_learner = me is not None and me.is_learner
        self._after_conf_change(member)
        return prs.conf_state()

    def _after_conf_change(self, member: int) -> None:
        if self.state != LEADER:
            return
        if self.id not in self.prs.voters:
            # Removed (or never a voter): a leader outside the configuration steps down so
            # that the remaining members elect one among themselves.
            self.become_follower(self.term, NONE)
            return
        if self.lead_transferee != NONE and self.lead_transferee not in self.prs.voters:
            self.abort_leader_transfer()
        if not self.prs.voters:
            return
        # Fewer voters may mean a smaller quorum, so something may commit now.
        if self.maybe_commit():
            self.bcast_append()
        else:
            for m in self.prs.progress:
                if m != self.id:
                    self.maybe_send_append(m, False)
