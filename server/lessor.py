"""The lessor: lease deadlines, and expiry on the leader.

Theory of operation. The store holds each lease's ID and granted TTL (the persistent state,
written by the applier); the lessor holds only deadlines, in memory, on the loop thread. As in
etcd, only the leader (the *primary* lessor) keeps real deadlines; a follower keeps every
lease forever. On promotion every deadline is reset to now + TTL + `extend` (etcd's Promote:
leader changes extend leases), so an outage never revokes a lease its holder kept alive;
more than 750 deadlines in one second are spread out, so a restart does not revoke a pile of
leases at once.

Expiry never deletes anything itself: each pass proposes a `LeaseRevoke` through Raft for up
to `revoke_batch_max` expired leases, `revoke_inflight_max` at a time, and the applier deletes
the keys at one revision on every member. A revoke that fails is retried after `retry_s`.
A keepalive of a lease past its deadline waits for that revoke and then answers TTL 0.

The lessor learns grants and revokes made through this member's Lease service at once, and
any other change (grants applied from another member's proposals, snapshot installs) by
re-reading `store.leases()`: on a miss, and in the expiry pass when the store's consistent
index moved, at most every `sync_interval_s` (a full scan, so not on every pass). A lease
granted elsewhere thus starts its countdown up to that much late, never early.
The clock is injected: tests drive `expire_once` with a fake one and never sleep.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.etcdserverpb import internal_pb2, rpc_pb2
from server.errors import NotLeaderError

log = logging.getLogger(__name__)

FOREVER_S = math.inf
EXPIRED = -1  # renew(): past its deadline, revoke pending
# etcd's MaxLeaseTTL: a larger requested TTL is refused with "too large lease TTL".
LEASE_TTL_MAX_S = 9_000_000_000


def min_lease_ttl_s(election_timeout_ms: int) -> int:
    """etcd's minTTL: ceil(1.5 x election timeout) seconds; shorter grants are raised to it."""
    return math.ceil(1.5 * election_timeout_ms / 1000)


@dataclass(slots=True)
class Lease:
    lease_id: int
    ttl_s: int  # the granted TTL
    deadline_s: float  # on the lessor's clock; FOREVER_S while not primary
    # Invariant: retry_at_s > now only while a revoke of this lease was proposed recently.
    retry_at_s: float = 0.0


class Lessor:
    def __init__(
        self,
        node: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick_s: float = 0.5,
        extend_s: float = 1.0,
        revoke_batch_max: int = 500,
        revoke_inflight_max: int = 16,
        retry_s: float = 3.0,
        sync_interval_s: float = 5.0,
        expiries_per_s_max: int = 750,
    ) -> None:
        self._node = node
        self._clock = clock
        self.tick_s = tick_s
        self.extend_s = extend_s
        self.revoke_batch_max = revoke_batch_max
        self.revoke_inflight_max = revoke_inflight_max
        self.retry_s = retry_s
        self.sync_interval_s = sync_interval_s
        # etcd: 3/4 of its revoke rate (1000/s), so piled-up leases leave room for the rest.
        self.expiries_per_s_max = expiries_per_s_max
        self._synced_at_s = -math.inf
        self.leases: dict[int, Lease] = {}
        # Keepalives of expired leases, answered once the revoke is applied (True) or this
        # member is demoted (False).
        self._expiry_waiters: dict[int, asyncio.Future[bool]] = {}
        self.primary = False
        self._synced_index: int | None = None

    # -- state changes ------------------------------------------------------------------

    def restore(self, *, primary: bool) -> None:
        """Loads every lease of the store; deadlines start now (etcd's promote at start-up)."""
        self.primary = primary
        self.leases.clear()
        self._sync_with_store(force=True)

    def promote(self) -> None:
        """This member became leader: every lease gets now + TTL + extend, spread so that no
        more than `expiries_per_s_max` fall in one second (etcd's Promote)."""
        self.primary = True
        now = self._clock()
        self._sync_with_store(force=True)
        for lease in self.leases.values():
            lease.deadline_s = now + lease.ttl_s + self.extend_s
            lease.retry_at_s = 0.0
        if len(self.leases) > self.expiries_per_s_max:
            self._spread_deadlines()

    def _spread_deadlines(self) -> None:
        """etcd's rate adjustment: walking the leases by deadline, once a one-second window
        holds more than the target, each further lease is pushed back in proportion."""
        target = self.expiries_per_s_max
        leases = sorted(self.leases.values(), key=lambda lease: lease.deadline_s)
        base_s = leases[0].deadline_s
        next_window_s = base_s + 1.0
        expiries = 0
        for lease in leases:
            if lease.deadline_s > next_window_s:
                base_s, next_window_s, expiries = lease.deadline_s, lease.deadline_s + 1.0, 1
                continue
            expiries += 1
            if expiries <= target:
                continue
            delay_s = expiries / target - (lease.deadline_s - base_s)
            next_window_s = base_s + delay_s
            lease.deadline_s += delay_s

    def demote(self) -> None:
        """This member lost leadership: its leases no longer expire here."""
        self.primary = False
        for lease in self.leases.values():
            lease.deadline_s = FOREVER_S
        for lease_id in list(self._expiry_waiters):
            self._wake_expiry_waiters(lease_id, revoked=False)

    def on_leader_change(self, is_leader: bool) -> None:
        if is_leader:
            self.promote()
        else:
            self.demote()

    def granted(self, lease_id: int, ttl_s: int) -> None:
        """A grant was applied; its deadline starts now."""
        self.leases[lease_id] = Lease(lease_id, ttl_s, self._deadline(ttl_s))

    def forget(self, lease_id: int) -> None:
        """A revoke was applied."""
        self.leases.pop(lease_id, None)
        self._wake_expiry_waiters(lease_id, revoked=True)

    def renew(self, lease_id: int) -> int:
        """A keepalive: the granted TTL; 0 if the lease is unknown; EXPIRED if its deadline
        passed and its revoke is on its way (see `keepalive`)."""
        lease = self.lookup(lease_id)
        if lease is None:
            return 0
        now = self._clock()
        if self.primary and lease.deadline_s <= now:
            return EXPIRED
        lease.deadline_s = self._deadline(lease.ttl_s)
        lease.retry_at_s = 0.0
        return lease.ttl_s

    async def keepalive(self, lease_id: int) -> int:
        """`renew`, except that for an expired lease it waits until the revoke is applied and
        then answers 0, as etcd does, so a client told TTL 0 finds the keys gone. Raises
        NotLeaderError if this member loses leadership meanwhile."""
        ttl_s = self.renew(lease_id)
        if ttl_s != EXPIRED:
            return ttl_s
        waiter = self._expiry_waiters.setdefault(lease_id, asyncio.Future())
        revoked = await asyncio.shield(waiter)
        if not revoked:
            raise NotLeaderError()
        return 0

    def _wake_expiry_waiters(self, lease_id: int, *, revoked: bool) -> None:
        waiter = self._expiry_waiters.pop(lease_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(revoked)

    # -- queries ---------------------------------------------------------------------

    def lookup(self, lease_id: int) -> Lease | None:
        """The lease, reading the store once on a miss (it may come from another member)."""
        lease = self.leases.get(lease_id)
        if lease is None:
            self._sync_with_store(force=True)
            lease = self.leases.get(lease_id)
        return lease

    def remaining_s(self, lease_id: int) -> float | None:
        """Seconds left (FOREVER_S on a follower), or None if the lease is unknown."""
        lease = self.lookup(lease_id)
        if lease is None:
            return None
        return max(0.0, lease.deadline_s - self._clock())

    def expired(self) -> list[int]:
        """Leases past their deadline that have no revoke in flight, oldest deadline first."""
        if not self.primary:
            return []
        now = self._clock()
        due = [
            lease
            for lease in self.leases.values()
            if lease.deadline_s <= now and lease.retry_at_s <= now
        ]
        due.sort(key=lambda lease: lease.deadline_s)
        return [lease.lease_id for lease in due[: self.revoke_batch_max]]

    # -- expiry ---------------------------------------------------------------------

    async def expire_once(self) -> list[int]:
        """One pass: proposes the revoke of each expired lease; returns those revoked."""
        self._sync_with_store(force=False)
        due = self.expired()
        revoked: list[int] = []
        for start in range(0, len(due), self.revoke_inflight_max):
            chunk = due[start : start + self.revoke_inflight_max]
            retry_at_s = self._clock() + self.retry_s
            for lease_id in chunk:
                self.leases[lease_id].retry_at_s = retry_at_s
            results = await asyncio.gather(
                *(self._revoke(lease_id) for lease_id in chunk), return_exceptions=True
            )
            for lease_id, result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("revoke of expired lease %x failed: %s", lease_id, result)
                else:
                    revoked.append(lease_id)
                    self.forget(lease_id)
        return revoked

    async def run(self) -> None:
        """The expiry loop; runs until cancelled."""
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.expire_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease expiry pass failed")

    async def _revoke(self, lease_id: int) -> None:
        request = internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id))
        await self._node.propose(request)

    # -- helpers --------------------------------------------------------------------

    def _deadline(self, ttl_s: int) -> float:
        return self._clock() + ttl_s if self.primary else FOREVER_S

    def _sync_with_store(self, *, force: bool) -> None:
        """Adds leases the store has and the lessor lacks; drops those the store lost."""
        store = self._node.store
        index = store.consistent_index
        now = self._clock()
        if not force and (
            index == self._synced_index or now - self._synced_at_s < self.sync_interval_s
        ):
            return
        self._synced_index, self._synced_at_s = index, now
        stored = dict(store.leases())
        for lease_id in [lease_id for lease_id in self.leases if lease_id not in stored]:
            del self.leases[lease_id]
            self._wake_expiry_waiters(lease_id, revoked=True)
        for lease_id, ttl_s in stored.items():
            if lease_id not in self.leases:
                self.leases[lease_id] = Lease(lease_id, ttl_s, self._deadline(ttl_s))
