"""Lock and election safety under seeded random contention, over the real engine.

Clients take the same lock in a loop (some give up while waiting, some hold their lease
for a while); the test records who holds the lock when. Checked: never two holders at once,
every holder's fencing token (its key's create revision) is larger than the previous
holder's, a cancelled waiter leaves no key behind, and everyone who waited got the lock.
The same for an election: one leader at a time, in the order they campaigned.
"""

from __future__ import annotations

import asyncio
import pathlib
import random

import pytest

from api.etcdserverpb import rpc_pb2
from server.election_service import ElectionService
from server.lease_service import IdGenerator, LeaseService
from server.lessor import Lessor
from server.lock_service import LockService
from tests.services_fakes import StoreNode, async_test

CLIENTS = 5
ROUNDS = 6


def services(node: StoreNode) -> tuple[LeaseService, LockService, ElectionService]:
    lessor = Lessor(node)
    lessor.restore(primary=True)
    lease = LeaseService(node, lessor, min_ttl_s=2, ids=IdGenerator(node.member_id))

    async def grant_session(ttl_s: int) -> int:
        return (await lease.grant(0, ttl_s)).ID

    return lease, LockService(node, grant_session), ElectionService(node, grant_session)


async def lock_run(seed: int, tmp_path: pathlib.Path) -> None:
    rng = random.Random(seed)
    node = StoreNode(str(tmp_path / "db"))
    lease, locks, _ = services(node)
    holder: list[int | None] = [None]
    tokens: list[int] = []
    acquired = [0] * CLIENTS

    async def client(number: int) -> None:
        lease_id = (await lease.grant(0, 60)).ID
        for _ in range(ROUNDS):
            attempt = asyncio.ensure_future(locks.lock(b"m", lease_id))
            if rng.random() < 0.25:
                await asyncio.sleep(0)
                if not attempt.done():
                    attempt.cancel()  # gives up while waiting
                    with pytest.raises(asyncio.CancelledError):
                        await attempt
                    continue
            held = await attempt
            assert holder[0] is None, f"client {number} got the lock held by {holder[0]}"
            holder[0] = number
            acquired[number] += 1
            token = node.store.range(rpc_pb2.RangeRequest(key=held.key)).kvs[0].create_revision
            assert not tokens or token > tokens[-1], "fencing tokens must grow"
            tokens.append(token)
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            holder[0] = None
            await locks._kv.delete(held.key)

    try:
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        leftover = node.store.range(rpc_pb2.RangeRequest(key=b"m/", range_end=b"m0"))
        assert leftover.count == 0, "a waiter left its key behind"
        assert sum(acquired) == len(tokens) > 0
    finally:
        node.close()


async def election_run(seed: int, tmp_path: pathlib.Path) -> None:
    rng = random.Random(seed)
    node = StoreNode(str(tmp_path / "db"))
    lease, _, elections = services(node)
    leader: list[int | None] = [None]
    order: list[int] = []

    async def candidate(number: int) -> None:
        lease_id = (await lease.grant(0, 60)).ID
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        won = await elections.campaign(b"e", lease_id, b"%d" % number)
        assert leader[0] is None, f"{number} leads while {leader[0]} still does"
        leader[0] = number
        order.append(won.leader.rev)
        current = node.store.range(rpc_pb2.RangeRequest(key=won.leader.key)).kvs[0]
        assert current.value == b"%d" % number
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        leader[0] = None
        await elections.resign(won.leader)

    try:
        await asyncio.gather(*(candidate(i) for i in range(CLIENTS)))
        assert order == sorted(order) and len(order) == CLIENTS  # in campaign order
    finally:
        node.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lock_is_mutually_exclusive_with_growing_tokens(seed: int, tmp_path: pathlib.Path) -> None:
    print(f"seed={seed}")
    async_test(lock_run)(seed, tmp_path)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_election_has_one_leader_at_a_time(seed: int, tmp_path: pathlib.Path) -> None:
    print(f"seed={seed}")
    async_test(election_run)(seed, tmp_path)
