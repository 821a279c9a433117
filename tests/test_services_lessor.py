"""The lessor: deadlines on a fake clock, expiry through Raft proposals, promotion and
demotion, restore from the store; and the Lease service's grant/keepalive/TTL rules."""

from __future__ import annotations

import asyncio

import pytest

from api.etcdserverpb import internal_pb2, rpc_pb2
from server.errors import NotLeaderError
from server.lease_service import IdGenerator, LeaseService
from server.lessor import EXPIRED, LEASE_TTL_MAX_S, Lessor, min_lease_ttl_s
from server.service_errors import LeaseTTLTooLargeError
from tests.services_fakes import FakeClock, FakeNode, async_test


def make(primary: bool = True) -> tuple[FakeNode, FakeClock, Lessor, LeaseService]:
    node = FakeNode()
    node.is_leader = primary
    clock = FakeClock()
    lessor = Lessor(node, clock=clock, extend_s=1.0)
    lessor.restore(primary=primary)
    service = LeaseService(node, lessor, min_ttl_s=2, ids=IdGenerator(node.member_id, clock))
    return node, clock, lessor, service


def put(node: FakeNode, key: bytes, lease_id: int) -> None:
    node.store.apply(internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, lease=lease_id)))


def test_min_ttl_is_one_and_a_half_election_timeouts_rounded_up() -> None:
    assert min_lease_ttl_s(1000) == 2
    assert min_lease_ttl_s(100) == 1
    assert min_lease_ttl_s(3000) == 5


@async_test
async def test_lease_expires_only_after_its_ttl_and_revocation_deletes_its_keys() -> None:
    """A 10 s lease is not revoked at 9.9 s, is at 10 s, through a lease_revoke proposal, and
    its keys go at one revision."""
    node, clock, lessor, service = make()
    granted = await service.grant(0x77, 10)
    assert (granted.ID, granted.TTL) == (0x77, 10)
    put(node, b"a", 0x77)
    put(node, b"b", 0x77)
    revision = node.store.revision
    clock.advance(9.9)
    assert await lessor.expire_once() == []
    clock.advance(0.1)
    assert await lessor.expire_once() == [0x77]
    assert node.proposals[-1].lease_revoke.ID == 0x77
    assert node.store.kvs == {} and node.store.leases() == []
    assert node.store.revision == revision + 1  # both keys deleted at one revision
    assert 0x77 not in lessor.leases


@async_test
async def test_keepalive_pushes_the_deadline_and_unknown_lease_gets_zero() -> None:
    node, clock, lessor, service = make()
    await service.grant(5, 10)
    clock.advance(8)
    assert lessor.renew(5) == 10
    clock.advance(8)  # 16 s after grant, 8 s after the keepalive
    assert await lessor.expire_once() == []
    assert lessor.renew(6) == 0
    clock.advance(2)
    assert await lessor.expire_once() == [5]
    assert lessor.renew(5) == 0


@async_test
async def test_keepalive_of_an_expired_lease_answers_zero_once_it_is_revoked() -> None:
    """As in etcd, the keepalive of a lease past its deadline waits for the revoke to be
    applied, then answers TTL 0 (so the client finds the keys gone)."""
    node, clock, lessor, service = make()
    await service.grant(5, 10)
    put(node, b"k", 5)
    clock.advance(10)
    assert lessor.renew(5) == EXPIRED
    keepalive = asyncio.ensure_future(lessor.keepalive(5))
    await asyncio.sleep(0)
    assert not keepalive.done()
    assert await lessor.expire_once() == [5]
    assert await keepalive == 0 and node.store.kvs == {}


@async_test
async def test_keepalive_of_an_expired_lease_fails_if_leadership_is_lost() -> None:
    node, clock, lessor, service = make()
    await service.grant(5, 10)
    clock.advance(10)
    keepalive = asyncio.ensure_future(lessor.keepalive(5))
    await asyncio.sleep(0)
    lessor.on_leader_change(False)
    with pytest.raises(NotLeaderError):
        await keepalive
    assert node.store.leases() == [(5, 10)]  # not revoked: the new leader decides


@async_test
async def test_time_to_live_truncates_and_lists_keys_and_unknown_is_minus_one() -> None:
    node, clock, lessor, service = make()
    await service.grant(9, 30)
    put(node, b"k2", 9)
    put(node, b"k1", 9)
    clock.advance(10.6)
    response = service.time_to_live(9, keys=True)
    assert (response.ID, response.TTL, response.grantedTTL) == (9, 19, 30)
    assert list(response.keys) == [b"k1", b"k2"]
    assert service.time_to_live(10, keys=False).TTL == -1


@async_test
async def test_grant_raises_short_ttl_refuses_huge_ttl_and_generates_ids() -> None:
    node, clock, lessor, service = make()
    response = await service.grant(0, 1)
    assert response.TTL == 2
    member_bits = node.member_id & 0xFFFF
    top_bits = response.ID >> 48
    assert response.ID > 0
    assert top_bits == member_bits
    assert node.proposals[-1].lease_grant.TTL == 2  # the log holds the effective TTL
    second = await service.grant(0, 5)
    assert second.ID != response.ID
    with pytest.raises(LeaseTTLTooLargeError):
        await service.grant(0, LEASE_TTL_MAX_S + 1)


@async_test
async def test_follower_never_expires_and_promotion_extends_deadlines() -> None:
    """On a follower nothing expires; on promotion each lease gets now + TTL + extend."""
    node, clock, lessor, service = make(primary=False)
    await service.grant(3, 10)
    clock.advance(1000)
    assert await lessor.expire_once() == []
    node.set_leader(True)
    lessor.on_leader_change(True)
    clock.advance(10.5)
    assert await lessor.expire_once() == []  # 10 s TTL + 1 s extend
    clock.advance(0.5)
    assert await lessor.expire_once() == [3]


@async_test
async def test_demotion_stops_expiry() -> None:
    node, clock, lessor, service = make()
    await service.grant(3, 10)
    lessor.on_leader_change(False)
    clock.advance(100)
    assert await lessor.expire_once() == []
    assert node.store.leases() == [(3, 10)]


@async_test
async def test_restore_loads_leases_from_the_store_with_full_ttl() -> None:
    node, clock, _, _ = make()
    node.store.lease_ttls.update({1: 5, 2: 50})
    lessor = Lessor(node, clock=clock)
    lessor.restore(primary=True)
    clock.advance(5)
    assert await lessor.expire_once() == [1]
    clock.advance(44)
    assert await lessor.expire_once() == []
    clock.advance(1)
    assert await lessor.expire_once() == [2]


@async_test
async def test_leases_granted_elsewhere_are_learned_from_the_store() -> None:
    """A grant applied from another member's proposal (straight into the store) expires too."""
    node, clock, lessor, _ = make()
    node.store.apply(
        internal_pb2.InternalRequest(lease_grant=rpc_pb2.LeaseGrantRequest(ID=8, TTL=4))
    )
    clock.advance(lessor.sync_interval_s)
    assert await lessor.expire_once() == []  # learned now; its countdown starts now
    clock.advance(4)
    assert await lessor.expire_once() == [8]


@async_test
async def test_failed_revoke_is_retried_after_the_retry_interval() -> None:
    node, clock, lessor, service = make()
    await service.grant(4, 10)
    clock.advance(10)
    node.fail_proposals = RuntimeError("raft is busy")
    assert await lessor.expire_once() == []
    node.fail_proposals = None
    clock.advance(1)
    assert await lessor.expire_once() == []  # within retry_s of the failed attempt
    clock.advance(lessor.retry_s)
    assert await lessor.expire_once() == [4]


@async_test
async def test_expiry_pass_is_bounded() -> None:
    node, clock, lessor, service = make()
    lessor.revoke_batch_max = 20
    for lease_id in range(1, 31):
        await service.grant(lease_id, 5)
    clock.advance(5)
    first = await lessor.expire_once()
    assert len(first) == 20
    second = await lessor.expire_once()
    assert sorted(first + second) == list(range(1, 31))


@async_test
async def test_revoke_forgets_the_lease() -> None:
    node, clock, lessor, service = make()
    await service.grant(4, 10)
    await service.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=4), context=None)
    assert 4 not in lessor.leases and node.store.leases() == []


def test_id_generator_matches_etcd_layout() -> None:
    ids = IdGenerator(0xABCD1234, wall_clock=lambda: 1.5)
    first = ids.next()
    assert first >> 48 == 0x1234
    assert first & ((1 << 48) - 1) == (1500 << 8) + 1
    assert ids.next() == first + 1


def test_promotion_spreads_a_pile_of_deadlines() -> None:
    """2,000 leases of one TTL would all expire in the same instant after a promotion; as in
    etcd, no one-second window gets more than 750 of them, and none expires early."""
    node, clock, _, _ = make(primary=False)
    node.store.lease_ttls.update({lease_id: 10 for lease_id in range(1, 2001)})
    lessor = Lessor(node, clock=clock, extend_s=1.0)
    lessor.restore(primary=False)
    lessor.promote()
    deadlines = sorted(lease.deadline_s - clock() for lease in lessor.leases.values())
    assert deadlines[0] == 11.0 and len(deadlines) == 2000
    for i, start in enumerate(deadlines):
        in_window = sum(1 for d in deadlines[i : i + 800] if d < start + 1.0)
        assert in_window <= 751, (start, in_window)
    assert deadlines[-1] < 11.0 + 2000 / 750 + 1


def test_promotion_leaves_few_leases_alone() -> None:
    node, clock, _, _ = make(primary=False)
    node.store.lease_ttls.update({lease_id: 10 for lease_id in range(1, 101)})
    lessor = Lessor(node, clock=clock, extend_s=1.0)
    lessor.restore(primary=False)
    lessor.promote()
    assert {lease.deadline_s - clock() for lease in lessor.leases.values()} == {11.0}
