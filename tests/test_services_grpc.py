"""The services over real gRPC (in-process grpc.aio server, generated stubs) against the fake
node: the wire shapes, error codes and texts, stream clean-up, and the lock and election
protocols with contention."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from api.etcdserverpb import internal_pb2, rpc_pb2, rpc_pb2_grpc
from api.v3electionpb import v3election_pb2, v3election_pb2_grpc
from api.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from tests.services_fakes import FakeClock, FakeNode, async_test, serving, wait_for


async def put(node: FakeNode, key: bytes, value: bytes = b"v", lease: int = 0) -> int:
    request = rpc_pb2.PutRequest(key=key, value=value, lease=lease)
    response = await node.propose(internal_pb2.InternalRequest(put=request))
    return response.header.revision


def watch_request(key: bytes, **fields: object) -> rpc_pb2.WatchRequest:
    create = rpc_pb2.WatchCreateRequest(key=key, **fields)  # type: ignore[arg-type]
    return rpc_pb2.WatchRequest(create_request=create)


# -- Watch ------------------------------------------------------------------------------


@async_test
async def test_watch_stream_over_grpc_and_clean_up_when_the_client_goes() -> None:
    node = FakeNode()
    async with serving(node) as (services, channel):
        stub = rpc_pb2_grpc.WatchStub(channel)
        call = stub.Watch()
        await call.write(watch_request(b"a"))
        created = await call.read()
        assert created.created and created.watch_id == 0
        revision = await put(node, b"a", b"1")
        response = await call.read()
        assert [(e.kv.key, e.kv.value, e.kv.mod_revision) for e in response.events] == [
            (b"a", b"1", revision)
        ]
        await call.write(watch_request(b"b", watch_id=7))
        assert (await call.read()).watch_id == 7
        assert services.watch.watcher_count() == 2
        call.cancel()
        await wait_for(lambda: services.watch.watcher_count() == 0)
        await wait_for(lambda: not node.store.watch_hub.watchers)
        assert not services.watch.streams


@async_test
async def test_many_streams_come_and_go_without_leaking_watchers() -> None:
    """200 concurrent streams, each with two watchers, all cancelled: nothing is left."""
    node = FakeNode()
    async with serving(node) as (services, channel):
        stub = rpc_pb2_grpc.WatchStub(channel)
        calls = []
        for i in range(200):
            call = stub.Watch()
            await call.write(watch_request(b"k%d" % i))
            await call.write(watch_request(b"shared"))
            calls.append(call)
        for call in calls:
            assert (await call.read()).created and (await call.read()).created
        assert services.watch.watcher_count() == 400
        await put(node, b"shared")
        for call in calls:
            assert (await call.read()).events[0].kv.key == b"shared"
        for call in calls:
            call.cancel()
        await wait_for(lambda: not node.store.watch_hub.watchers and not services.watch.streams)


@async_test
async def test_a_slow_client_does_not_hold_up_a_fast_one() -> None:
    """One stream never reads; another sees every one of 300 large events in order."""
    node = FakeNode()
    async with serving(node) as (services, channel):
        stub = rpc_pb2_grpc.WatchStub(channel)
        slow, fast = stub.Watch(), stub.Watch()
        for call in (slow, fast):
            await call.write(watch_request(b"big"))
            assert (await call.read()).created
        first = None
        for i in range(300):
            revision = await put(node, b"big", b"%06d" % i + b"x" * 20_000)
            first = first or revision
        seen = []
        while len(seen) < 300:
            seen.extend(e.kv.mod_revision for e in (await fast.read()).events)
        assert seen == list(range(first, first + 300))
        slow.cancel()
        fast.cancel()


@async_test
async def test_a_request_the_stream_cannot_take_ends_the_call_with_its_error() -> None:
    node = FakeNode()
    async with serving(node) as (services, channel):

        def broken_watch(*args: object, **kwargs: object) -> None:
            raise RuntimeError("watch hub closed")

        node.store.watch_hub.watch = broken_watch  # type: ignore[method-assign]
        call = rpc_pb2_grpc.WatchStub(channel).Watch()
        await call.write(watch_request(b"a"))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call.read()
        assert error.value.details() == "watch hub closed"
        await wait_for(lambda: not services.watch.streams)


@async_test
async def test_watch_requiring_a_leader_is_refused_without_one() -> None:
    node = FakeNode()
    async with serving(node) as (_, channel):
        node.set_leader(False)
        node.leader_id = 0
        call = rpc_pb2_grpc.WatchStub(channel).Watch(metadata=(("hasleader", "true"),))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            # The refusal may already be there when the write goes out.
            await call.write(watch_request(b"a"))
            await call.read()
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error.value.details() == "etcdserver: no leader"
        plain = rpc_pb2_grpc.WatchStub(channel).Watch()
        await plain.write(watch_request(b"a"))
        assert (await plain.read()).created  # a follower still serves plain watches
        plain.cancel()


@async_test
async def test_watch_progress_notify_interval_is_configurable() -> None:
    node = FakeNode()
    async with serving(node, progress_interval_s=0.05) as (_, channel):
        call = rpc_pb2_grpc.WatchStub(channel).Watch()
        await call.write(watch_request(b"a", progress_notify=True))
        assert (await call.read()).created
        notify = await asyncio.wait_for(call.read(), 5)
        assert notify.watch_id == 0 and not notify.events and not notify.created
        assert notify.header.revision == node.store.revision
        call.cancel()


# -- Lease ------------------------------------------------------------------------------


@async_test
async def test_lease_rpcs_and_keepalive_stream() -> None:
    node, clock = FakeNode(), FakeClock()
    async with serving(node, clock=clock) as (services, channel):
        stub = rpc_pb2_grpc.LeaseStub(channel)
        granted = await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10))
        assert granted.TTL == 10 and granted.ID > 0 and granted.header.revision == 1
        lease_id = granted.ID
        await put(node, b"owned", lease=lease_id)
        clock.advance(6)
        keepalive = stub.LeaseKeepAlive()
        await keepalive.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        renewed = await keepalive.read()
        assert renewed.ID == lease_id  # noqa: SIM300 (ruff takes ID for a constant)
        assert renewed.TTL == 10
        await keepalive.write(rpc_pb2.LeaseKeepAliveRequest(ID=12345))
        assert (await keepalive.read()).TTL == 0
        await keepalive.done_writing()
        ttl = await stub.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=True))
        assert (ttl.TTL, ttl.grantedTTL, list(ttl.keys)) == (10, 10, [b"owned"])
        unknown = await stub.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=999))
        assert unknown.TTL == -1
        listed = await stub.LeaseLeases(rpc_pb2.LeaseLeasesRequest())
        assert [status.ID for status in listed.leases] == [lease_id]
        clock.advance(10)
        assert await services.lessor.expire_once() == [lease_id]
        assert node.store.kvs == {}
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease_id))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert error.value.details() == "etcdserver: requested lease not found"


@async_test
async def test_lease_grant_errors() -> None:
    node = FakeNode()
    async with serving(node) as (_, channel):
        stub = rpc_pb2_grpc.LeaseStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=9_000_000_001))
        assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert error.value.details() == "etcdserver: too large lease TTL"
        await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=5, TTL=60))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=5, TTL=60))
        assert error.value.details() == "etcdserver: lease already exists"


@async_test
async def test_keepalive_on_a_follower_says_not_leader() -> None:
    node = FakeNode()
    async with serving(node) as (_, channel):
        node.set_leader(False)
        keepalive = rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive()
        await keepalive.write(rpc_pb2.LeaseKeepAliveRequest(ID=1))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await keepalive.read()
        assert error.value.details() == "etcdserver: not leader"


# -- Lock -------------------------------------------------------------------------------


async def grant(channel: grpc.aio.Channel, ttl_s: int = 60) -> int:
    response = await rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(
        rpc_pb2.LeaseGrantRequest(TTL=ttl_s)
    )
    return response.ID


@async_test
async def test_lock_contention_hands_over_in_order_with_growing_fencing_tokens() -> None:
    node = FakeNode()
    async with serving(node) as (_, channel):
        stub = v3lock_pb2_grpc.LockStub(channel)
        leases = [await grant(channel) for _ in range(3)]
        first = await stub.Lock(v3lock_pb2.LockRequest(name=b"mtx", lease=leases[0]))
        assert first.key == b"mtx/" + format(leases[0], "x").encode()
        waiters = [
            asyncio.ensure_future(stub.Lock(v3lock_pb2.LockRequest(name=b"mtx", lease=lease)))
            for lease in leases[1:]
        ]
        await wait_for(lambda: len(node.store.kvs) == 3)
        assert not any(waiter.done() for waiter in waiters)
        await stub.Unlock(v3lock_pb2.UnlockRequest(key=first.key))
        second = await asyncio.wait_for(waiters[0], 5)
        assert not waiters[1].done()
        await stub.Unlock(v3lock_pb2.UnlockRequest(key=second.key))
        third = await asyncio.wait_for(waiters[1], 5)
        assert first.header.revision < second.header.revision < third.header.revision
        # The fencing token, the key's create revision, grows with each holder.
        token = node.store.kvs[third.key].create_revision
        assert first.header.revision < token < third.header.revision


@async_test
async def test_lock_holder_lease_expiry_releases_the_lock() -> None:
    node, clock = FakeNode(), FakeClock()
    async with serving(node, clock=clock) as (services, channel):
        stub = v3lock_pb2_grpc.LockStub(channel)
        short, long = await grant(channel, 5), await grant(channel, 60)
        await stub.Lock(v3lock_pb2.LockRequest(name=b"m", lease=short))
        waiter = asyncio.ensure_future(stub.Lock(v3lock_pb2.LockRequest(name=b"m", lease=long)))
        await wait_for(lambda: len(node.store.kvs) == 2)
        clock.advance(5)
        assert await services.lessor.expire_once() == [short]
        acquired = await asyncio.wait_for(waiter, 5)
        assert acquired.key == b"m/" + format(long, "x").encode()


@async_test
async def test_cancelled_lock_removes_its_waiting_key_and_bad_lease_fails() -> None:
    node = FakeNode()
    async with serving(node) as (_, channel):
        stub = v3lock_pb2_grpc.LockStub(channel)
        holder = await grant(channel)
        await stub.Lock(v3lock_pb2.LockRequest(name=b"m", lease=holder))
        waiter = stub.Lock(v3lock_pb2.LockRequest(name=b"m", lease=await grant(channel)))
        await wait_for(lambda: len(node.store.kvs) == 2)
        waiter.cancel()
        await wait_for(lambda: len(node.store.kvs) == 1)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Lock(v3lock_pb2.LockRequest(name=b"m", lease=424242))
        assert error.value.details() == "etcdserver: requested lease not found"
        # etcd's v3lock gets that error through clientv3, which strips its status: Unknown.
        assert error.value.code() == grpc.StatusCode.UNKNOWN


@async_test
async def test_lock_without_lease_gets_a_session_lease() -> None:
    node = FakeNode()
    async with serving(node) as (_, channel):
        response = await v3lock_pb2_grpc.LockStub(channel).Lock(v3lock_pb2.LockRequest(name=b"x"))
        (kv,) = node.store.kvs.values()
        assert kv.key == response.key and node.store.lease_ttls[kv.lease] == 60


@async_test
async def test_lock_after_waiting_answers_with_the_whole_header() -> None:
    """A Lock that had to wait answers with the header of its final read: etcd's is a full
    Range header (cluster, member, term), not the store's bare revision."""
    node = FakeNode()
    async with serving(node) as (_, channel):
        stub = v3lock_pb2_grpc.LockStub(channel)
        first = await stub.Lock(v3lock_pb2.LockRequest(name=b"m", lease=await grant(channel)))
        waiter = stub.Lock(v3lock_pb2.LockRequest(name=b"m", lease=await grant(channel)))
        await wait_for(lambda: len(node.store.kvs) == 2)
        await stub.Unlock(v3lock_pb2.UnlockRequest(key=first.key))
        second = await asyncio.wait_for(waiter, 5)
        assert second.header == node.header(second.header.revision)


# -- Election ---------------------------------------------------------------------------


@async_test
async def test_leader_header_and_error_codes_are_etcds() -> None:
    """Leader answers with a full header (cluster, member, term and revision), as etcd's
    Range-based Leader does; a Campaign with an unknown lease fails Unknown with the KV
    error's text (clientv3 strips the status), where KV.Put would say NotFound."""
    node = FakeNode()
    async with serving(node) as (_, channel):
        stub = v3election_pb2_grpc.ElectionStub(channel)
        lease = await grant(channel)
        await stub.Campaign(v3election_pb2.CampaignRequest(name=b"e", lease=lease, value=b"a"))
        leader = await stub.Leader(v3election_pb2.LeaderRequest(name=b"e"))
        assert leader.header == node.header(leader.kv.mod_revision)
        assert leader.header.cluster_id and leader.header.member_id and leader.header.raft_term
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Campaign(v3election_pb2.CampaignRequest(name=b"f", lease=31337, value=b"a"))
        assert error.value.code() == grpc.StatusCode.UNKNOWN
        assert error.value.details() == "etcdserver: requested lease not found"


@async_test
async def test_election_campaign_observe_proclaim_resign() -> None:
    node = FakeNode()
    async with serving(node) as (_, channel):
        stub = v3election_pb2_grpc.ElectionStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Leader(v3election_pb2.LeaderRequest(name=b"e"))
        assert error.value.code() == grpc.StatusCode.UNKNOWN
        assert error.value.details() == "election: no leader"
        observe = stub.Observe(v3election_pb2.LeaderRequest(name=b"e"))
        lease_a, lease_b = await grant(channel), await grant(channel)
        a = await stub.Campaign(
            v3election_pb2.CampaignRequest(name=b"e", lease=lease_a, value=b"A")
        )
        assert a.leader.key == b"e/" + format(lease_a, "x").encode()
        assert a.leader.rev == a.header.revision and a.leader.lease == lease_a
        assert (await observe.read()).kv.value == b"A"
        b = asyncio.ensure_future(
            stub.Campaign(v3election_pb2.CampaignRequest(name=b"e", lease=lease_b, value=b"B"))
        )
        await stub.Proclaim(v3election_pb2.ProclaimRequest(leader=a.leader, value=b"A2"))
        assert (await observe.read()).kv.value == b"A2"
        leader = await stub.Leader(v3election_pb2.LeaderRequest(name=b"e"))
        assert leader.kv.value == b"A2"
        assert not b.done()
        await stub.Resign(v3election_pb2.ResignRequest(leader=a.leader))
        elected = await asyncio.wait_for(b, 5)
        assert elected.leader.lease == lease_b
        assert (await observe.read()).kv.value == b"B"
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Proclaim(v3election_pb2.ProclaimRequest(leader=a.leader, value=b"x"))
        assert error.value.details() == "election: not leader"
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Resign(v3election_pb2.ResignRequest())
        assert error.value.details() == '"leader" field must be provided'
        observe.cancel()


@async_test
async def test_campaign_again_with_the_same_lease_proclaims_the_new_value() -> None:
    node = FakeNode()
    async with serving(node) as (_, channel):
        stub = v3election_pb2_grpc.ElectionStub(channel)
        lease = await grant(channel)
        first = await stub.Campaign(
            v3election_pb2.CampaignRequest(name=b"e", lease=lease, value=b"1")
        )
        again = await stub.Campaign(
            v3election_pb2.CampaignRequest(name=b"e", lease=lease, value=b"2")
        )
        assert again.leader.rev == first.leader.rev
        assert (await stub.Leader(v3election_pb2.LeaderRequest(name=b"e"))).kv.value == b"2"
