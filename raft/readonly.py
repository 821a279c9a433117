"""ReadIndex bookkeeping on the leader (etcd's read_only.go, ReadOnlySafe).

Theory of operation: a read request records the commit index at arrival and is tagged with its
context; the leader sends a heartbeat round carrying that context. When a quorum acknowledges
it, this request and every request queued before it are served at their recorded indices: one
confirmation serves every read that was waiting. At most one round is in flight: reads that
arrive meanwhile share the next one. Periodic heartbeats carry the latest context too, so a
lost round delays reads by one heartbeat interval at most.
"""

from __future__ import annotations

from raft.types import Message


class ReadIndexStatus:
    __slots__ = ("req", "index", "acks")

    def __init__(self, req: Message, index: int) -> None:
        self.req = req
        self.index = index
        self.acks: set[int] = set()


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []
        # The context of the heartbeat round in flight, if any (at most one at a time).
        self.round_ctx: bytes | None = None

    def add_request(self, index: int, m: Message) -> None:
        ctx = m.context
        if ctx in self.pending:
            return  # the same context is already waiting: one confirmation serves both
        self.pending[ctx] = ReadIndexStatus(m, index)
        self.queue.append(ctx)

    def recv_ack(self, member: int, ctx: bytes) -> set[int] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(member)
        return rs.acks

    def advance(self, ctx: bytes) -> list[tuple[Message, int]]:
        """Dequeue every request up to and including ctx; return (request, index) pairs."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx)
        done = self.queue[: i + 1]
        del self.queue[: i + 1]
        out = []
        for c in done:
            rs = self.pending.pop(c)
            out.append((rs.req, rs.index))
        return out

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
