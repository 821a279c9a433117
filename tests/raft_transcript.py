"""Golden-transcript interaction tests for raft/, after etcd-raft's datadriven tests.

A script (tests/raft_testdata/*.txt) is a list of blocks:

    command arg key=value ...
    ----
    expected output (no blank lines)

separated by blank lines; lines starting with '#' between blocks are comments. The runner
executes each command against a cluster of RawNodes on a scripted network (messages wait in
a queue until a command delivers or drops them) and compares the output. With PETRA_REWRITE=1
the expected outputs are regenerated; review the diff before committing it.

Commands:
  cluster n=3 [pre_vote=1] [check_quorum=1] [election=10] [max_size=N] [inflight=N] [learners=4,5]
  campaign ID | propose ID DATA | propose-batch ID DATA... | read-index ID CTX
  propose-conf-change ID add|remove|add-learner MEMBER | transfer-leader LEADER TRANSFEREE
  tick ID [N] | tick-election ID | tick-heartbeat ID
  process-ready ID...      handle each member's Ready (persist, apply), queue its messages
  deliver-msgs [to=ID] [from=ID] [type=MsgApp] [ctx=C]   deliver matching queued messages, in order
  drop-msgs [to=ID] [from=ID] [type=...]
  stabilize [ID...]        process-ready and deliver until quiet (isolated members excluded)
  isolate ID | heal | crash ID | restart ID | compact ID INDEX
  raft-state | raft-log ID | status ID
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import random

from raft import (
    ConfChange,
    ConfChangeType,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    Ready,
    StateType,
)
from raft.codec import decode_conf_change
from raft.errors import RaftError
from raft.raft import Config
from raft.rawnode import RawNode
from raft.types import Entry

TESTDATA = pathlib.Path(__file__).parent / "raft_testdata"
SEED = 1  # every member's rng is seeded from this and its id


def describe_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        cc = decode_conf_change(e.data)
        return f"{e.term}/{e.index} EntryConfChange {cc.type.name.lower()} {cc.node_id}"
    return f"{e.term}/{e.index} EntryNormal {e.data.decode()!r}"


def describe_entries(ents: tuple[Entry, ...] | list[Entry]) -> str:
    return "[" + ", ".join(describe_entry(e) for e in ents) + "]"


_MSG_NAMES = {
    t: "Msg" + "".join(w.capitalize() for w in t.name[4:].split("_")) for t in MessageType
}


def describe_message(m: Message) -> str:
    s = f"{m.from_}->{m.to} {_MSG_NAMES[MessageType(m.type)]} Term:{m.term}"
    if m.type in (MessageType.MSG_APP, MessageType.MSG_VOTE, MessageType.MSG_PRE_VOTE):
        s += f" Log:{m.log_term}/{m.index}"
    elif m.index or m.type in (MessageType.MSG_APP_RESP, MessageType.MSG_READ_INDEX_RESP):
        s += f" Index:{m.index}"
    if m.type in (MessageType.MSG_APP, MessageType.MSG_HEARTBEAT) or m.commit:
        s += f" Commit:{m.commit}"
    if m.reject and m.type == MessageType.MSG_APP_RESP:
        s += f" Rejected (Hint: {m.reject_hint}, LogTerm: {m.log_term})"
    elif m.reject:
        s += " Rejected"
    if m.entries:
        s += f" Entries:{describe_entries(m.entries)}"
    if m.context:
        s += f" Context:{m.context.decode(errors='replace')!r}"
    if m.snapshot is not None:
        cs = m.snapshot.conf_state
        s += (
            f" Snapshot: Index:{m.snapshot.index} Term:{m.snapshot.term}"
            f" Voters:{list(cs.voters)} Learners:{list(cs.learners)}"
        )
    return s


def describe_ready(rd: Ready) -> list[str]:
    out = []
    if rd.soft_state is not None:
        out.append(f"Lead:{rd.soft_state.lead} State:{rd.soft_state.raft_state.name}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        out.append(f"HardState Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}")
    if rd.snapshot is not None:
        out.append(f"Snapshot Index:{rd.snapshot.index} Term:{rd.snapshot.term}")
    if rd.entries:
        out.append("Entries:")
        out.extend("  " + describe_entry(e) for e in rd.entries)
    if rd.committed_entries:
        out.append("CommittedEntries:")
        out.extend("  " + describe_entry(e) for e in rd.committed_entries)
    if rd.messages:
        out.append("Messages:")
        out.extend("  " + describe_message(m) for m in rd.messages)
    for rs in rd.read_states:
        out.append(f"ReadState Index:{rs.index} Context:{rs.request_ctx.decode()!r}")
    if rd.must_sync:
        out.append("MustSync")
    return out


@dataclasses.dataclass
class TMember:
    id: int
    storage: MemoryStorage
    node: RawNode
    applied: list[str]


class Transcript:
    def __init__(self) -> None:
        self.members: dict[int, TMember] = {}
        self.queue: list[Message] = []
        self.isolated: set[int] = set()
        self.crashed: set[int] = set()
        self.opts: dict[str, int] = {}

    # ---- members ---------------------------------------------------------------------------

    def new_member(self, member_id: int, storage: MemoryStorage, peers: list[int] | None) -> None:
        o = self.opts
        cfg = Config(
            id=member_id,
            storage=storage,
            rng=random.Random(SEED * 1000 + member_id),
            election_tick=o["election"],
            heartbeat_tick=1,
            applied=storage.snapshot().index,
            pre_vote=bool(o["pre_vote"]),
            check_quorum=bool(o["check_quorum"]),
            max_size_per_msg=o["max_size"],
            max_inflight_msgs=o["inflight"],
        )
        node = RawNode(cfg, peers=peers)
        self.members[member_id] = TMember(member_id, storage, node, [])

    def process_ready(self, member_id: int, out: list[str]) -> bool:
        m = self.members[member_id]
        if member_id in self.crashed or not m.node.has_ready():
            return False
        rd = m.node.ready()
        out.append(f"> {member_id} handling Ready")
        out.extend("  " + line for line in describe_ready(rd))
        if rd.snapshot is not None:
            m.storage.apply_snapshot(rd.snapshot)
            m.applied = [f"<{rd.snapshot.data.decode()}>"]
        m.storage.append(rd.entries)
        if rd.hard_state is not None:
            m.storage.set_hard_state(rd.hard_state)
        self.queue.extend(rd.messages)
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                cs = m.node.apply_conf_change(decode_conf_change(e.data))
                out.append(
                    f"  > {member_id} applied conf change: voters={list(cs.voters)}"
                    f" learners={list(cs.learners)}"
                )
            elif e.data:
                m.applied.append(e.data.decode())
        m.node.advance(rd)
        return True

    def deliver(self, out: list[str], keep: bool, **flt: str) -> int:
        n = 0
        rest = []
        for msg in self.queue:
            if not self._matches(msg, flt):
                rest.append(msg)
                continue
            n += 1
            if not keep:
                out.append(f"dropped: {describe_message(msg)}")
                continue
            if msg.to in self.isolated or msg.from_ in self.isolated or msg.to in self.crashed:
                out.append(f"lost: {describe_message(msg)}")
                continue
            out.append(describe_message(msg))
            try:
                self.members[msg.to].node.step(msg)
            except RaftError as err:
                out.append(f"  error: {type(err).__name__}: {err}")
        self.queue = rest
        return n

    @staticmethod
    def _matches(msg: Message, flt: dict[str, str]) -> bool:
        if "to" in flt and msg.to != int(flt["to"]):
            return False
        if "from" in flt and msg.from_ != int(flt["from"]):
            return False
        if "ctx" in flt and msg.context != flt["ctx"].encode():
            return False
        return not ("type" in flt and _MSG_NAMES[MessageType(msg.type)] != flt["type"])

    def stabilize(self, ids: list[int], out: list[str]) -> None:
        for _ in range(200):
            progressed = False
            for i in ids:
                progressed |= self.process_ready(i, out)
            msgs_for = [m for m in self.queue if m.to in ids]
            if msgs_for:
                for i in ids:
                    if any(m.to == i for m in self.queue):
                        out.append(f"> {i} receiving messages")
                        sub: list[str] = []
                        self.deliver(sub, True, to=str(i))
                        out.extend("  " + line for line in sub)
                progressed = True
            if not progressed:
                return
        raise AssertionError("stabilize did not converge")

    # ---- commands --------------------------------------------------------------------------

    def run(self, cmd: str, args: list[str], kw: dict[str, str]) -> list[str]:
        out: list[str] = []
        fn = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if fn is None:
            raise ValueError(f"unknown command {cmd!r}")
        fn(args, kw, out)
        return out or ["ok"]

    def cmd_cluster(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        n = int(kw.get("n", "3"))
        self.opts = {
            "pre_vote": int(kw.get("pre_vote", "1")),
            "check_quorum": int(kw.get("check_quorum", "1")),
            "election": int(kw.get("election", "10")),
            "max_size": int(kw.get("max_size", str(1 << 20))),
            "inflight": int(kw.get("inflight", "256")),
        }
        ids = list(range(1, n + 1))
        for i in ids:
            self.new_member(i, MemoryStorage(), ids)
        for i in ids:
            self.process_ready(i, [])  # persist the bootstrap entries quietly
        out.append(f"members {ids}")

    def cmd_add_member(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        """A new, empty member process (it joins once a conf change adds it)."""
        self.new_member(int(args[0]), MemoryStorage(), None)

    def cmd_campaign(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        self.members[int(args[0])].node.campaign()

    def cmd_propose(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        try:
            self.members[int(args[0])].node.propose(args[1].encode())
        except ProposalDroppedError as err:
            out.append(f"error: {type(err).__name__}: {err}")

    def cmd_propose_batch(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        self.members[int(args[0])].node.propose_batch([a.encode() for a in args[1:]])

    def cmd_propose_conf_change(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        kinds = {
            "add": ConfChangeType.ADD_NODE,
            "remove": ConfChangeType.REMOVE_NODE,
            "add-learner": ConfChangeType.ADD_LEARNER_NODE,
        }
        cc = ConfChange(kinds[args[1]], int(args[2]))
        try:
            self.members[int(args[0])].node.propose_conf_change(cc)
        except ProposalDroppedError as err:
            out.append(f"error: {type(err).__name__}: {err}")

    def cmd_read_index(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        self.members[int(args[0])].node.read_index(args[1].encode())

    def cmd_transfer_leader(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        self.members[int(args[0])].node.transfer_leader(int(args[1]))

    def cmd_tick(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        for _ in range(int(args[1]) if len(args) > 1 else 1):
            self.members[int(args[0])].node.tick()

    def cmd_tick_election(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        r = self.members[int(args[0])].node.raft
        for _ in range(max(1, r.randomized_election_timeout - r.election_elapsed)):
            r.tick()

    def cmd_tick_heartbeat(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        r = self.members[int(args[0])].node.raft
        for _ in range(r.heartbeat_timeout):
            r.tick()

    def cmd_process_ready(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        for a in args:
            if not self.process_ready(int(a), out):
                out.append(f"> {a}: no Ready")

    def cmd_deliver_msgs(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        self.deliver(out, True, **kw)

    def cmd_drop_msgs(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        self.deliver(out, False, **kw)

    def cmd_stabilize(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        ids = [int(a) for a in args] or [
            i for i in sorted(self.members) if i not in self.isolated and i not in self.crashed
        ]
        self.stabilize(ids, out)

    def cmd_isolate(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        self.isolated.add(int(args[0]))

    def cmd_heal(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        self.isolated.clear()

    def cmd_crash(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        self.crashed.add(int(args[0]))
        self.queue = [m for m in self.queue if m.from_ != int(args[0])]

    def cmd_restart(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        i = int(args[0])
        self.crashed.discard(i)
        self.new_member(i, self.members[i].storage, None)
        r = self.members[i].node.raft
        out.append(f"{i} restarted: term={r.term} vote={r.vote} commit={r.raft_log.committed}")

    def cmd_compact(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        m = self.members[int(args[0])]
        index = int(args[1])
        cs = m.node.raft.prs.conf_state()
        m.storage.create_snapshot(index, cs, f"state@{index}".encode())
        m.storage.compact(index)
        out.append(f"{m.id} compacted to {index}: first index {m.storage.first_index()}")

    def cmd_raft_state(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        for i in sorted(self.members):
            r = self.members[i].node.raft
            tag = " (crashed)" if i in self.crashed else ""
            tag += " (isolated)" if i in self.isolated else ""
            learner = " learner" if r.is_learner else ""
            out.append(
                f"{i}: {r.state.name}{learner} term={r.term} lead={r.lead} "
                f"commit={r.raft_log.committed} last={r.raft_log.last_index()} "
                f"applied={self.members[i].applied}{tag}"
            )

    def cmd_raft_log(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        log = self.members[int(args[0])].node.raft.raft_log
        ents = log.all_entries()
        out.extend(describe_entry(e) for e in ents)
        if not ents:
            out.append(f"log is empty: first index {log.first_index()}")

    def cmd_status(self, args: list[str], kw: dict[str, str], out: list[str]) -> None:
        r = self.members[int(args[0])].node.raft
        if r.state != StateType.LEADER:
            out.append(f"{r.id} is {r.state.name}")
            return
        for i, pr in sorted(r.prs.progress.items()):
            out.append(f"{i}: {pr!r}")


def parse(text: str) -> list[tuple[list[str], str, list[str]]]:
    """Blocks of (comment lines, command line, expected output lines)."""
    blocks = []
    lines = text.splitlines()
    i = 0
    comments: list[str] = []
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            comments.append(line)
            i += 1
            continue
        cmd = line
        i += 1
        expected: list[str] = []
        if i < len(lines) and lines[i] == "----":
            i += 1
            while i < len(lines) and lines[i].strip():
                expected.append(lines[i])
                i += 1
        blocks.append((comments, cmd, expected))
        comments = []
    return blocks


def run_file(path: pathlib.Path) -> tuple[str, list[str]]:
    """Run a script; return the rewritten text and the list of mismatch descriptions."""
    t = Transcript()
    pieces = []
    mismatches = []
    for comments, cmd, expected in parse(path.read_text()):
        words = cmd.split()
        args = [w for w in words[1:] if "=" not in w]
        kw = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        got = t.run(words[0], args, kw)
        if got != expected:
            mismatches.append(
                f"{path.name}: {cmd}\n--- expected\n"
                + "\n".join(expected)
                + "\n--- got\n"
                + "\n".join(got)
            )
        pieces.append("\n".join([*comments, cmd, "----", *got]))
    return "\n\n".join(pieces) + "\n", mismatches


def rewrite_requested() -> bool:
    return os.environ.get("PETRA_REWRITE") == "1"
