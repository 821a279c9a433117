"""Watch guarantees under random workloads, over the real engine and its watch hub.

Each run is seeded: a random mix of puts, deletes, multi-put txns, compactions, watch
creates (start revisions in the past, now, and the future; single keys, ranges, from-key),
cancels and progress requests, with the stream drained only now and then, so watchers fall
behind the hub's (deliberately tiny) ring and replay from LMDB, and some are compacted away.
A model history built from the operations themselves is the reference. Checked for every
watcher, as etcd's robustness tests do: created first; events ordered, unique and reliable
(exactly the model's events for its range from its start revision, or a prefix of them when it
was cancelled or compacted); atomic (a revision never split across responses); and
bookmarkable (after a progress reply at R, no event at or below R).
"""

from __future__ import annotations

import asyncio
import pathlib
import random
from dataclasses import dataclass, field

import pytest

from api.etcdserverpb import internal_pb2, rpc_pb2
from api.mvccpb import kv_pb2
from server.watch_service import WatchStream
from tests.services_fakes import StoreNode, async_test

KEYS = [b"a", b"b", b"c", b"d", b"e"]
STEPS = 400


@dataclass
class Watcher:
    key: bytes
    range_end: bytes
    start: int
    responses: list[rpc_pb2.WatchResponse] = field(default_factory=list)
    canceled_by_us: bool = False

    def covers(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\x00":
            return key >= self.key
        return self.key <= key < self.range_end


@dataclass
class Model:
    current: dict[bytes, bytes] = field(default_factory=dict)
    # (revision, type, key, value) of every change, in order.
    history: list[tuple[int, int, bytes, bytes]] = field(default_factory=list)
    delete_revisions: set[int] = field(default_factory=set)


async def apply_random_write(rng: random.Random, node: StoreNode, model: Model) -> None:
    choice = rng.random()
    if choice < 0.55:
        key, value = rng.choice(KEYS), b"%d" % rng.randrange(1000)
        request = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=value))
        revision = (await node.propose(request)).header.revision
        model.current[key] = value
        model.history.append((revision, kv_pb2.Event.PUT, key, value))
    elif choice < 0.8:
        key = rng.choice(KEYS)
        delete = rpc_pb2.DeleteRangeRequest(key=key)
        revision = await node.propose(internal_pb2.InternalRequest(delete_range=delete))
        if key in model.current:
            del model.current[key]
            model.history.append((revision.header.revision, kv_pb2.Event.DELETE, key, b""))
            model.delete_revisions.add(revision.header.revision)
    else:
        keys = sorted(rng.sample(KEYS, rng.randint(2, 4)))
        ops = [
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=b"t" + k)) for k in keys
        ]
        txn = rpc_pb2.TxnRequest(success=ops)
        revision = (await node.propose(internal_pb2.InternalRequest(txn=txn))).header.revision
        for k in keys:
            model.current[k] = b"t" + k
            model.history.append((revision, kv_pb2.Event.PUT, k, b"t" + k))


def random_create(rng: random.Random, node: StoreNode) -> rpc_pb2.WatchCreateRequest:
    key = rng.choice(KEYS)
    shape = rng.random()
    range_end = b""
    if shape < 0.3:
        range_end = bytes([key[0] + rng.randint(1, 3)])
    elif shape < 0.4:
        range_end = b"\x00"
    current = node.store.revision
    start = rng.choice([0, 0, current + 1, current + 3, max(1, current - rng.randint(0, 30))])
    return rpc_pb2.WatchCreateRequest(key=key, range_end=range_end, start_revision=start)


def drain(stream: WatchStream, out: list[rpc_pb2.WatchResponse]) -> None:
    while batch := stream.poll():
        out.extend(batch)


async def settle(stream: WatchStream, out: list[rpc_pb2.WatchResponse]) -> None:
    """Drains until nothing more comes and no progress request is pending. (The hub's notify
    for a write reaches the loop before that write's proposal returns.)"""
    for _ in range(1000):
        drain(stream, out)
        if not stream.progress_requested and not stream.pending:
            return
        # A progress reply waiting for the hub retries after a short timer.
        await asyncio.sleep(0.001 if stream.progress_requested else 0)
    raise AssertionError("the stream did not settle")


async def run(seed: int, tmp_path: pathlib.Path, steps: int = STEPS) -> None:
    rng = random.Random(seed)
    node = StoreNode(str(tmp_path / "db"))
    node.store.watch_hub.ring_events_max = 8  # force replays from LMDB
    model = Model()
    stream = WatchStream(node)
    watchers: dict[int, Watcher] = {}
    out: list[rpc_pb2.WatchResponse] = []
    try:
        for _ in range(steps):
            roll = rng.random()
            if roll < 0.6:
                await apply_random_write(rng, node, model)
            elif roll < 0.72:
                request = random_create(rng, node)
                start = request.start_revision or node.store.revision + 1
                watch_id = stream.create(request)
                watchers[watch_id] = Watcher(request.key, request.range_end, start)
            elif roll < 0.76 and watchers:
                watch_id = rng.choice(sorted(watchers))
                if not watchers[watch_id].canceled_by_us:
                    drain(stream, out)  # what was sent before the cancel counts
                    watchers[watch_id].canceled_by_us = True
                    stream.cancel(watch_id)
            elif roll < 0.8 and node.store.revision > node.store.compact_revision + 1:
                low = max(node.store.compact_revision + 1, node.store.revision - 40)
                revision = rng.randint(low, node.store.revision)
                compaction = rpc_pb2.CompactionRequest(revision=revision)
                await node.propose(internal_pb2.InternalRequest(compaction=compaction))
            elif roll < 0.84:
                stream.handle(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
            if rng.random() < 0.3:
                await settle(stream, out)
        await settle(stream, out)
        check(model, watchers, out)
    finally:
        stream.close()
        node.close()


def check(model: Model, watchers: dict[int, Watcher], out: list[rpc_pb2.WatchResponse]) -> None:
    # A progress reply at R bookmarks every watcher created before it: none of them may get
    # an event at or below R afterwards. (A watcher created later may replay older events.)
    bookmarks: dict[int, int] = {}
    for response in out:
        if response.watch_id == -1 and not response.created:
            for watch_id in bookmarks:
                bookmarks[watch_id] = max(bookmarks[watch_id], response.header.revision)
            continue
        if response.created and response.watch_id != -1:
            bookmarks[response.watch_id] = 0
        for event in response.events:
            assert event.kv.mod_revision > bookmarks[response.watch_id], (
                f"watcher {response.watch_id}: an event at or below a progress reply"
            )
        if response.watch_id in watchers:
            watchers[response.watch_id].responses.append(response)
    for watch_id, watcher in watchers.items():
        check_watcher(model, watch_id, watcher)


def check_watcher(model: Model, watch_id: int, watcher: Watcher) -> None:
    responses = watcher.responses
    assert responses and responses[0].created, f"watcher {watch_id}: created must come first"
    got = [
        (e.kv.mod_revision, e.type, e.kv.key, e.kv.value)
        for response in responses[1:]
        for e in response.events
    ]
    expected = [
        change
        for change in model.history
        if change[0] >= watcher.start and watcher.covers(change[2])
    ]
    compacted = [r for r in responses if r.compact_revision]
    ended = bool(compacted) or watcher.canceled_by_us
    if ended:
        assert got == expected[: len(got)], f"watcher {watch_id}: not a prefix"
    else:
        assert got == expected, f"watcher {watch_id}: events differ from the model"
    if compacted:
        assert compacted[-1].canceled and compacted[-1] is responses[-1]
        # As in etcd, a watcher whose position fell below the compaction is cancelled even if
        # its own range had no change in between; what it got stays below the compaction.
        assert not got or got[-1][0] < compacted[-1].compact_revision
    revisions_seen: set[int] = set()
    for response in responses[1:]:
        revisions = {e.kv.mod_revision for e in response.events}
        assert not revisions & revisions_seen, f"watcher {watch_id}: a revision was split"
        revisions_seen |= revisions


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_watch_guarantees_hold_under_random_workloads(seed: int, tmp_path: pathlib.Path) -> None:
    print(f"seed={seed}")  # replay: pytest -k 'guarantees and {seed}'
    async_test(run)(seed, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 130))
def test_watch_guarantees_hold_under_long_random_workloads(
    seed: int, tmp_path: pathlib.Path
) -> None:
    print(f"seed={seed}")
    async_test(run)(seed, tmp_path, 2000)


def test_delete_at_the_compaction_revision_is_delivered(tmp_path: pathlib.Path) -> None:
    """etcd#18089's reproduction: put k x3, delete k (r5), put k, compact r5, watch from r5
    (allowed: it is not below the compaction): the DELETE at r5 comes first, then the put."""

    async def scenario() -> list[tuple[int, int]]:
        node = StoreNode(str(tmp_path / "db"))
        try:
            for value in (b"v2", b"v3", b"v4"):
                put = rpc_pb2.PutRequest(key=b"k", value=value)
                await node.propose(internal_pb2.InternalRequest(put=put))
            delete = rpc_pb2.DeleteRangeRequest(key=b"k")
            r5 = await node.propose(internal_pb2.InternalRequest(delete_range=delete))
            r5_revision = r5.header.revision
            put = rpc_pb2.PutRequest(key=b"k", value=b"v6")
            await node.propose(internal_pb2.InternalRequest(put=put))
            compaction = rpc_pb2.CompactionRequest(revision=r5_revision)
            await node.propose(internal_pb2.InternalRequest(compaction=compaction))
            while node.store.compaction_step():
                pass
            node.store.watch_hub.ring_events_max = 0  # replay from LMDB, not the ring
            node.store.watch_hub.publish([], node.store.revision)
            stream = WatchStream(node)
            stream.create(rpc_pb2.WatchCreateRequest(key=b"k", start_revision=r5_revision))
            out: list[rpc_pb2.WatchResponse] = []
            await settle(stream, out)
            stream.close()
            return [(e.type, e.kv.mod_revision - r5_revision) for r in out for e in r.events]
        finally:
            node.close()

    assert asyncio.run(scenario()) == [(kv_pb2.Event.DELETE, 0), (kv_pb2.Event.PUT, 1)]
