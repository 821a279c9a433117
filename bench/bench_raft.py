"""Raft throughput with no I/O: a 3-member cluster in one process.

Each round the leader takes a batch of proposals (one propose_batch call, or a single
propose), then every member handles its Ready (append to MemoryStorage, apply) and messages are
delivered until the cluster is quiet: one full replication round trip per batch, as a server
would do it without disk or network. Prints committed (and applied everywhere) entries per
second. `--codec` also encodes and decodes every message with raft.codec, as the peer
transport would.

    python -m bench.bench_raft [--seconds 3] [--codec] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time

from raft import Config, MemoryStorage, RawNode, StateType
from raft.codec import decode_message, encode_message

COMPACT_EVERY_ENTRIES = 20_000


class BenchMember:
    def __init__(self, member_id: int, peers: list[int]) -> None:
        self.storage = MemoryStorage()
        cfg = Config(id=member_id, storage=self.storage, rng=random.Random(member_id))
        self.node = RawNode(cfg, peers=peers)
        self.applied_index = 0

    def handle(self, out: list) -> None:
        node = self.node
        storage = self.storage
        while node.has_ready():
            rd = node.ready()
            if rd.entries:
                storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.hard_state = rd.hard_state
            out.extend(rd.messages)
            if rd.committed_entries:
                self.applied_index = rd.committed_entries[-1].index
                if self.applied_index - storage.first_index() > COMPACT_EVERY_ENTRIES:
                    storage.compact(self.applied_index - 1000)
            node.advance(rd)


def run(batch: int, seconds: float, codec: bool) -> tuple[float, float]:
    """Committed entries per wall-clock second and per CPU second of this process (the
    machine is shared: the CPU figure is the one that does not depend on other load)."""
    members = {i: BenchMember(i, [1, 2, 3]) for i in (1, 2, 3)}
    members[1].node.campaign()
    pump(members, codec)
    assert members[1].node.raft.state == StateType.LEADER
    leader = members[1].node
    payload = [b"k" * 64] * batch
    start_index = members[1].applied_index
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            if batch == 1:
                leader.propose(payload[0])
            else:
                leader.propose_batch(payload)
            pump(members, codec)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    low = min(m.applied_index for m in members.values())
    assert low == members[1].applied_index, "followers did not apply everything"
    return (low - start_index) / elapsed, (low - start_index) / cpu


def pump(members: dict[int, BenchMember], codec: bool) -> None:
    """Deliver messages until the cluster is quiet; only members that received something
    are asked for a Ready (as a server's event loop would)."""
    msgs: list = []
    for m in members.values():
        m.handle(msgs)
    while msgs:
        batch, msgs = msgs, []
        touched: dict[int, BenchMember] = {}
        for msg in batch:
            if codec:
                msg = decode_message(encode_message(msg))
            m = members[msg.to]
            m.node.step(msg)
            touched[msg.to] = m
        for m in touched.values():
            m.handle(msgs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--codec", action="store_true", help="encode/decode every message")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    for batch in (100, 1):
        rate, rate_cpu = run(batch, args.seconds, args.codec)
        codec = " with codec" if args.codec else ""
        print(
            f"3 members, batches of {batch:>3}{codec}: {rate:,.0f} committed entries/s "
            f"({rate_cpu:,.0f} per CPU second)"
        )
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
