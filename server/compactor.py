"""Auto-compaction: etcd's periodic and revision compactors (etcdserver/api/v3compactor).

Theory of operation. A policy object decides, from the clock and the store's revision, which
revision to compact and when; it does no I/O, so tests drive it with a fake clock. The
`Compactor` driver wakes every `policy.interval_s`, skips the pass unless this member is the
leader (etcd pauses its compactor on followers), and proposes a `Compaction` through Raft like a
client Compact would. "Already compacted" counts as success, as in etcd.

periodic, retention R (a duration; a bare number means hours): the revision is sampled every
min(R, 1h)/10; the first compaction happens R after start, then one every min(R, 1h), each to the
revision sampled R + one interval earlier (etcd keeps R/interval + 1 samples).
revision, retention N: every 5 minutes compact to current revision - N, unless that is <= 0
or the same as last time.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from api.etcdserverpb import internal_pb2, rpc_pb2
from engine.errors import CompactedError

log = logging.getLogger(__name__)

HOUR_S = 3600.0
RETRY_DIVISOR = 10
REVISION_INTERVAL_S = 300.0  # etcd's revInterval

_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": HOUR_S}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class CompactorConfigError(ValueError):
    pass


def parse_duration_s(text: str) -> float:
    """Go's time.ParseDuration for non-negative values ("1h30m", "90s", "0.5h")."""
    if text in ("0", ""):
        return 0.0
    position, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS_S[match.group(2)]
        position = match.end()
    if position != len(text):
        raise CompactorConfigError(f"invalid auto-compaction-retention {text!r}")
    return total


class Policy(Protocol):
    interval_s: float

    def sample(self, revision: int) -> None: ...
    def due(self, now_s: float) -> int | None: ...
    def succeeded(self, revision: int, now_s: float) -> None: ...


class PeriodicPolicy:
    def __init__(self, retention_s: float, now_s: float) -> None:
        assert retention_s > 0
        self.period_s = retention_s
        compact_interval_s = min(retention_s, HOUR_S)
        self.interval_s = compact_interval_s / RETRY_DIVISOR
        self._compact_interval_s = compact_interval_s
        self._retentions = int(retention_s / self.interval_s) + 1
        self._revisions: list[int] = []
        self._last_success_s = now_s
        # The first compaction waits a whole retention period, later ones one interval.
        self._base_interval_s = retention_s

    def sample(self, revision: int) -> None:
        self._revisions.append(revision)
        if len(self._revisions) > self._retentions:
            del self._revisions[0]  # _revisions[0] is the revision of one period ago

    def due(self, now_s: float) -> int | None:
        if now_s - self._last_success_s < self._base_interval_s or not self._revisions:
            return None
        self._base_interval_s = self._compact_interval_s
        return self._revisions[0]

    def succeeded(self, revision: int, now_s: float) -> None:
        self._last_success_s = now_s


class RevisionPolicy:
    def __init__(self, retention: int) -> None:
        assert retention > 0
        self.retention = retention
        self.interval_s = REVISION_INTERVAL_S
        self._revision = 0
        self._previous = 0

    def sample(self, revision: int) -> None:
        self._revision = revision

    def due(self, now_s: float) -> int | None:
        target = self._revision - self.retention
        if target <= 0 or target == self._previous:
            return None
        return target

    def succeeded(self, revision: int, now_s: float) -> None:
        self._previous = revision


def make_policy(mode: str, retention: str, now_s: float) -> Policy | None:
    """The policy for etcd's --auto-compaction-mode/-retention; None when disabled ("0")."""
    if mode == "periodic":
        retention_s = (
            float(retention) * HOUR_S
            if re.fullmatch(r"\d+(\.\d*)?", retention)
            else parse_duration_s(retention)
        )
        return PeriodicPolicy(retention_s, now_s) if retention_s > 0 else None
    if mode == "revision":
        try:
            count = int(retention)
        except ValueError:
            raise CompactorConfigError(f"invalid auto-compaction-retention {retention!r}") from None
        return RevisionPolicy(count) if count > 0 else None
    raise CompactorConfigError(f"unknown auto-compaction-mode {mode!r}")


class Compactor:
    def __init__(
        self, node: Any, policy: Policy, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._node = node
        self.policy = policy
        self._clock = clock
        self.compacted: list[int] = []  # revisions this compactor compacted, for tests/metrics

    async def step(self) -> int | None:
        """One pass after an interval: compacts if due; samples for the next pass."""
        try:
            if self._node.is_leader:
                return await self._maybe_compact()
            return None
        finally:
            self.policy.sample(self._node.store.revision)

    async def _maybe_compact(self) -> int | None:
        revision = self.policy.due(self._clock())
        if revision is None:
            return None
        request = internal_pb2.InternalRequest(
            compaction=rpc_pb2.CompactionRequest(revision=revision)
        )
        try:
            await self._node.propose(request)
        except Exception as exc:
            if not isinstance(exc, CompactedError):
                log.warning("auto-compaction to revision %d failed: %s", revision, exc)
                return None
        self.policy.succeeded(revision, self._clock())
        self.compacted.append(revision)
        log.info("auto-compacted to revision %d", revision)
        return revision

    async def run(self) -> None:
        """Runs until cancelled."""
        self.policy.sample(self._node.store.revision)
        while True:
            await asyncio.sleep(self.policy.interval_s)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("auto-compaction pass failed")
