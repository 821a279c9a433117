"""RawNode: the synchronous API the server drives (etcd's rawnode.go).

Theory of operation: the caller feeds time (tick), messages from peers (step) and client
requests (propose, read_index, ...), then asks for a Ready, acts on it in order (persist,
send, apply) and calls advance(ready). Nothing happens between those calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from raft import codec
from raft.errors import StepLocalMsgError, StepPeerNotFoundError
from raft.raft import (
    ENTRY_CONF_CHANGE,
    MSG_HUP,
    MSG_PROP,
    MSG_READ_INDEX,
    MSG_SNAP_STATUS,
    MSG_TRANSFER_LEADER,
    MSG_UNREACHABLE,
    Config,
    Raft,
)
from raft.storage import NO_LIMIT
from raft.types import (
    EMPTY_HARD_STATE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Message,
    Ready,
    SoftState,
    is_local_msg,
    is_response_msg,
)

_LOCAL_MSGS = frozenset(t for t in range(32) if is_local_msg(t))
_RESPONSE_MSGS = frozenset(t for t in range(32) if is_response_msg(t))


class RawNode:
    def __init__(self, config: Config, peers: Sequence[int] | None = None) -> None:
        self.raft = Raft(config)
        storage = config.storage
        if peers and storage.last_index() == 0 and not storage.initial_state()[1].voters:
            self._bootstrap(peers)
        self.prev_soft_state = self.raft.soft_state()
        self.prev_hard_state = (
            EMPTY_HARD_STATE if peers and storage.last_index() == 0 else self.raft.hard_state()
        )

    def _bootstrap(self, peers: Sequence[int]) -> None:
        """A brand-new cluster: the log starts with one committed ADD_NODE entry per peer at
        term 1, already applied to the configuration (the application sees them committed
        and may apply them again: apply_conf_change is idempotent)."""
        r = self.raft
        r.become_follower(1, 0)
        ents = [
            Entry(1, i + 1, ENTRY_CONF_CHANGE, codec.encode_conf_change(ConfChange(node_id=p)))
            for i, p in enumerate(peers)
        ]
        r.raft_log.append(ents)
        r.raft_log.committed = len(ents)
        for p in peers:
            r.apply_conf_change(ConfChange(ConfChangeType.ADD_NODE, p))
        r.conf_applied_index = len(ents)

    # ---- inputs ----------------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(Message(MSG_HUP))

    def propose(self, data: bytes) -> None:
        """Propose one entry. Raises ProposalDroppedError if it cannot be taken now."""
        r = self.raft
        r.step(Message(MSG_PROP, from_=r.id, entries=(Entry(data=data),)))

    def propose_batch(self, datas: Iterable[bytes]) -> None:
        """Propose several entries in one message (one append per follower for all)."""
        r = self.raft
        ents = tuple([Entry(data=d) for d in datas])
        if ents:
            r.step(Message(MSG_PROP, from_=r.id, entries=ents))

    def propose_conf_change(self, cc: ConfChange) -> None:
        data = codec.encode_conf_change(cc)
        r = self.raft
        r.step(Message(MSG_PROP, from_=r.id, entries=(Entry(type=ENTRY_CONF_CHANGE, data=data),)))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed configuration change (call when applying its entry)."""
        return self.raft.apply_conf_change(cc)

    def step(self, m: Message) -> None:
        """Take a message from a peer."""
        t = m.type
        if t in _LOCAL_MSGS:
            raise StepLocalMsgError(f"message type {m.type} is local to raft")
        if t in _RESPONSE_MSGS and m.from_ not in self.raft.prs.progress:
            raise StepPeerNotFoundError(f"response from unknown member {m.from_}")
        self.raft.step(m)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; the answer comes as a ReadState with ctx."""
        self.raft.step(Message(MSG_READ_INDEX, context=ctx))

    def transfer_leader(self, transferee: int) -> None:
        self.raft.step(Message(MSG_TRANSFER_LEADER, from_=transferee))

    def report_unreachable(self, member: int) -> None:
        self.raft.step(Message(MSG_UNREACHABLE, from_=member))

    def report_snapshot(self, member: int, failed: bool) -> None:
        self.raft.step(Message(MSG_SNAP_STATUS, from_=member, reject=failed))

    # ---- outputs ---------------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        if r.msgs or r.read_states:  # the most common reasons first
            return True
        log = r.raft_log
        u = log.unstable
        if u.entries or u.snapshot is not None or log.has_next_ents():
            return True
        ss = self.prev_soft_state
        if r.lead != ss.lead or r.state != ss.raft_state:
            return True
        hs = self.prev_hard_state
        changed = r.term != hs.term or r.vote != hs.vote or log.committed != hs.commit
        return changed and (r.term, r.vote, log.committed) != (0, 0, 0)

    def ready(self) -> Ready:
        r = self.raft
        log = r.raft_log
        soft: SoftState | None = None
        prev_soft = self.prev_soft_state
        if r.lead != prev_soft.lead or r.state != prev_soft.raft_state:
            soft = SoftState(r.lead, r.state)
            self.prev_soft_state = soft
        hard: HardState | None = None
        prev_hard = self.prev_hard_state
        term_or_vote_changed = r.term != prev_hard.term or r.vote != prev_hard.vote
        if term_or_vote_changed or log.committed != prev_hard.commit:
            hard = HardState(r.term, r.vote, log.committed)
        u = log.unstable
        entries = u.entries[:] if u.entries else []
        committed = log.next_ents() if log.committed > log.applied else []
        if committed and r.max_uncommitted_size < NO_LIMIT:
            r.reduce_uncommitted_size(committed)
        rd = Ready(
            soft,
            hard,
            entries,
            u.snapshot,
            committed,
            r.msgs,
            r.read_states,
            bool(entries) or u.snapshot is not None or term_or_vote_changed,
        )
        r.msgs = []
        r.read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The application persisted, sent and applied everything in rd."""
        r = self.raft
        if rd.hard_state is not None:
            self.prev_hard_state = rd.hard_state
        if rd.committed_entries:
            r.raft_log.applied_to(rd.committed_entries[-1].index)
        if rd.entries:
            last = rd.entries[-1]
            r.raft_log.stable_to(last.index, last.term)
            r.on_persisted()
        if rd.snapshot is not None:
            r.raft_log.stable_snap_to(rd.snapshot.index)

    def status(self) -> dict[str, Any]:
        r = self.raft
        st: dict[str, Any] = {
            "id": r.id,
            "term": r.term,
            "vote": r.vote,
            "commit": r.raft_log.committed,
            "applied": r.raft_log.applied,
            "lead": r.lead,
            "state": r.state,
            "lead_transferee": r.lead_transferee,
        }
        if r.state == r.state.LEADER:
            st["progress"] = {m: repr(pr) for m, pr in sorted(r.prs.progress.items())}
        return st
