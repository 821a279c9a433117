"""The watch stream's logic without gRPC: a `WatchStream` over the fake node, polled the way
the gRPC sender polls it. Each test checks one of etcd's watch rules (reference section 3)."""

from __future__ import annotations

import asyncio

import pytest

from api.etcdserverpb import internal_pb2, rpc_pb2
from api.mvccpb import kv_pb2
from server.watch_service import ERR_DUPLICATE_ID, ERR_EMPTY_RANGE, WatchStream, fragments
from tests.services_fakes import FakeNode, async_test

PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE


async def put(node: FakeNode, key: bytes, value: bytes = b"v") -> int:
    response = await node.propose(
        internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=value))
    )
    return response.header.revision


async def delete(node: FakeNode, key: bytes) -> int:
    response = await node.propose(
        internal_pb2.InternalRequest(delete_range=rpc_pb2.DeleteRangeRequest(key=key))
    )
    return response.header.revision


def create(stream: WatchStream, key: bytes, **fields: object) -> int:
    return stream.create(rpc_pb2.WatchCreateRequest(key=key, **fields))  # type: ignore[arg-type]


async def take(stream: WatchStream, count: int, timeout_s: float = 5.0) -> list:
    """The next `count` responses of the stream, waiting for them with a deadline."""
    out: list = []
    while len(out) < count:
        batch = stream.poll()
        if batch:
            out.extend(batch)
            continue
        await asyncio.wait_for(stream.wait(), timeout_s)
    assert len(out) == count, out
    return out


async def quiet(stream: WatchStream) -> None:
    """Nothing more is sent once every callback already queued has run."""
    for _ in range(3):
        await asyncio.sleep(0)
    assert stream.poll() == []


def events(response: rpc_pb2.WatchResponse) -> list[tuple[int, bytes, int]]:
    return [(event.type, event.kv.key, event.kv.mod_revision) for event in response.events]


@async_test
async def test_created_precedes_events_and_live_events_follow() -> None:
    node = FakeNode()
    stream = WatchStream(node)
    watch_id = create(stream, b"a")
    revision = await put(node, b"a")  # written before the created reply went out
    created, first = await take(stream, 2)
    assert created.created and created.watch_id == watch_id == 0
    assert created.header.revision == 1 and created.header.member_id == node.member_id
    assert events(first) == [(PUT, b"a", revision)]
    assert first.header.revision == revision
    await put(node, b"b")  # not watched
    deleted = await delete(node, b"a")
    (second,) = await take(stream, 1)
    assert events(second) == [(DELETE, b"a", deleted)]
    await quiet(stream)


@async_test
async def test_start_revision_replays_history_then_goes_live() -> None:
    node = FakeNode()
    revisions = [await put(node, b"k", str(i).encode()) for i in range(5)]
    stream = WatchStream(node)
    create(stream, b"k", start_revision=revisions[2])
    created, replay = await take(stream, 2)
    assert created.created
    assert [event.kv.value for event in replay.events] == [b"2", b"3", b"4"]
    live = await put(node, b"k", b"5")
    (response,) = await take(stream, 1)
    assert events(response) == [(PUT, b"k", live)]


@async_test
async def test_auto_ids_count_up_skip_used_ids_and_duplicates_are_refused() -> None:
    node = FakeNode()
    stream = WatchStream(node)
    assert create(stream, b"a", watch_id=1) == 1
    assert create(stream, b"a") == 0
    assert create(stream, b"a") == 2  # 1 is taken
    assert create(stream, b"a", watch_id=2) == -1
    stream.cancel(0)
    assert create(stream, b"a") == 3  # the counter does not go back to a freed ID
    responses = await take(stream, 6)
    refused = responses[3]
    assert (refused.watch_id, refused.created, refused.canceled) == (-1, True, True)
    assert refused.cancel_reason == ERR_DUPLICATE_ID
    assert (responses[4].watch_id, responses[4].canceled) == (0, True)


@async_test
async def test_empty_range_is_refused_and_empty_key_means_zero_byte() -> None:
    node = FakeNode()
    stream = WatchStream(node)
    assert create(stream, b"b", range_end=b"a") == -1
    assert create(stream, b"b", range_end=b"b") == -1
    assert create(stream, b"", range_end=b"\x00") == 0  # the whole keyspace
    refused, _, created = await take(stream, 3)
    assert refused.cancel_reason == ERR_EMPTY_RANGE and refused.canceled
    assert created.created and not created.canceled
    await put(node, b"anything")
    (response,) = await take(stream, 1)
    assert events(response)[0][1] == b"anything"


@async_test
async def test_prefix_range_prev_kv_and_filters() -> None:
    node = FakeNode()
    await put(node, b"p/1", b"old")
    stream = WatchStream(node)
    create(stream, b"p/", range_end=b"p0", prev_kv=True, filters=[rpc_pb2.WatchCreateRequest.NOPUT])
    await take(stream, 1)
    await put(node, b"p/1", b"new")  # filtered out: nothing is sent for it
    await put(node, b"q", b"x")
    await quiet(stream)
    revision = await delete(node, b"p/1")
    (response,) = await take(stream, 1)
    assert events(response) == [(DELETE, b"p/1", revision)]
    assert response.events[0].prev_kv.value == b"new"


@async_test
async def test_cancel_stops_events() -> None:
    node = FakeNode()
    stream = WatchStream(node)
    create(stream, b"a")
    await take(stream, 1)
    stream.cancel(0)
    (canceled,) = await take(stream, 1)
    assert (canceled.watch_id, canceled.canceled) == (0, True)
    await put(node, b"a")
    await quiet(stream)
    stream.cancel(0)  # unknown ID: etcd sends nothing
    await quiet(stream)
    assert node.store.watch_hub.watchers == set()


@async_test
async def test_compacted_start_revision_cancels_with_the_compact_revision() -> None:
    node = FakeNode()
    for i in range(6):
        await put(node, b"k", str(i).encode())
    await node.propose(
        internal_pb2.InternalRequest(compaction=rpc_pb2.CompactionRequest(revision=5))
    )
    stream = WatchStream(node)
    create(stream, b"k", start_revision=2)
    create(stream, b"k", start_revision=5)  # at the compact revision: still allowed
    created, _, compacted, replay = await take(stream, 4)
    assert created.created
    assert (compacted.watch_id, compacted.canceled, compacted.compact_revision) == (0, True, 5)
    assert replay.watch_id == 1 and replay.events[0].kv.mod_revision == 5
    assert 0 not in stream.watchers and 1 in stream.watchers


@async_test
async def test_compacted_cancel_header_has_revision_zero() -> None:
    """etcd 3.4's cancel of a compacted watcher (a start below the compaction, or a negative
    start) carries cluster, member and term in its header but revision 0, where the created
    reply before it carries the current revision."""
    node = FakeNode()
    for i in range(4):
        await put(node, b"k", str(i).encode())
    await node.propose(
        internal_pb2.InternalRequest(compaction=rpc_pb2.CompactionRequest(revision=4))
    )
    stream = WatchStream(node)
    create(stream, b"k", start_revision=2)
    create(stream, b"k", start_revision=-3)
    responses = await take(stream, 4)
    for watch_id in (0, 1):
        created, cancel = [r for r in responses if r.watch_id == watch_id]
        assert created.created and created.header == node.header(node.store.revision)
        assert cancel.canceled and cancel.compact_revision == 4
        assert cancel.header == node.header(0)
        assert cancel.header.cluster_id and cancel.header.member_id and cancel.header.raft_term


@async_test
async def test_progress_request_answers_after_pending_events_with_current_revision() -> None:
    node = FakeNode()
    stream = WatchStream(node)
    create(stream, b"a")
    create(stream, b"b")
    await take(stream, 2)
    await put(node, b"a")
    revision = await put(node, b"b")
    stream.handle(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    responses = await take(stream, 3)
    assert [r.watch_id for r in responses[:2]] == [0, 1]
    progress = responses[2]
    assert progress.watch_id == -1 and not progress.events and not progress.created
    assert progress.header.revision == revision


@async_test
async def test_progress_waits_until_the_hub_has_published_the_current_revision() -> None:
    """The store's revision moves just before the hub publishes it; a progress reply at that
    revision must wait, or the event it stands for would follow the bookmark."""
    node = FakeNode()
    stream = WatchStream(node)
    create(stream, b"a")
    await take(stream, 1)
    with node.store.lock:
        node.store.revision += 1  # committed, not yet published
        node.store.events_at[node.store.revision] = [
            kv_pb2.Event(type=PUT, kv=kv_pb2.KeyValue(key=b"a", mod_revision=2))
        ]
    stream.handle(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    await quiet(stream)
    node.store.watch_hub.publish()
    event, progress = await take(stream, 2)
    assert events(event) == [(PUT, b"a", 2)]
    assert (progress.watch_id, progress.header.revision) == (-1, 2)


@async_test
async def test_progress_notify_only_for_idle_watchers_that_asked() -> None:
    node = FakeNode()
    stream = WatchStream(node)
    create(stream, b"idle", progress_notify=True)
    create(stream, b"busy", progress_notify=True)
    create(stream, b"other")
    await take(stream, 3)
    await put(node, b"busy")
    await take(stream, 1)
    stream.progress_tick()
    (notify,) = await take(stream, 1)
    assert notify.watch_id == 0 and not notify.events
    assert notify.header.revision == node.store.revision
    stream.progress_tick()  # now both were idle during the interval
    assert sorted(r.watch_id for r in await take(stream, 2)) == [0, 1]


@async_test
async def test_close_cancels_every_hub_watcher() -> None:
    node = FakeNode()
    stream = WatchStream(node)
    for key in (b"a", b"b", b"c"):
        create(stream, key)
    assert len(node.store.watch_hub.watchers) == 3
    stream.close()
    assert node.store.watch_hub.watchers == set() and stream.watchers == {}
    await put(node, b"a")
    assert stream.pending == {}


def test_fragments_split_large_responses_and_keep_every_event() -> None:
    response = rpc_pb2.WatchResponse(watch_id=3)
    for i in range(10):
        kv = kv_pb2.KeyValue(key=b"k%d" % i, value=b"x" * 100, mod_revision=7)
        response.events.add(type=PUT, kv=kv)
    parts = fragments(response, limit_bytes=350)
    assert len(parts) > 1
    assert all(p.fragment for p in parts[:-1]) and not parts[-1].fragment
    assert [e.kv.key for p in parts for e in p.events] == [b"k%d" % i for i in range(10)]
    assert all(p.ByteSize() < 350 or len(p.events) == 1 for p in parts)
    assert fragments(response, limit_bytes=10_000) == [response]
    single = rpc_pb2.WatchResponse(events=[response.events[0]])
    assert fragments(single, limit_bytes=1) == [single]


@async_test
async def test_one_poll_holds_a_bounded_number_of_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten watchers, each three events behind: with a budget of five events a poll takes two
    watchers' worth, and the others follow, in order, on the next polls."""
    import server.watch_service as watch_service

    node = FakeNode()
    for i in range(3):
        await put(node, b"k", b"%d" % i)
    stream = WatchStream(node)
    for _ in range(10):
        create(stream, b"k", start_revision=2)
    assert len(stream.poll()) == 10  # the created responses
    monkeypatch.setattr(watch_service, "POLL_EVENTS_MAX", 5)
    sizes, seen = [], []
    while responses := stream.poll():
        sizes.append(sum(len(r.events) for r in responses))
        seen.extend(r.watch_id for r in responses)
    assert sizes == [6, 6, 6, 6, 6]
    assert seen == list(range(10))
