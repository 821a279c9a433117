"""Auto-compaction on a fake clock: etcd's periodic schedule, the revision mode, leadership
pausing, and parsing of the retention flag.

etcd 3.4's periodic compactor keeps retention/interval + 1 samples, one per interval, so the
first compaction (at R) goes to the revision at start and each later one to the revision
sampled R + one interval earlier; these tests pin that exact schedule."""

from __future__ import annotations

import pytest

from server.compactor import (
    Compactor,
    CompactorConfigError,
    PeriodicPolicy,
    RevisionPolicy,
    make_policy,
    parse_duration_s,
)
from tests.services_fakes import FakeClock, FakeNode, async_test

WRITES_PER_STEP = 10


async def drive(node: FakeNode, clock: FakeClock, compactor: Compactor, steps: int) -> dict:
    """Runs `steps` passes: the store gains WRITES_PER_STEP revisions per interval. Returns
    {time since start: compacted revision} and the revision sampled at each time."""
    start_s = clock()
    compactor.policy.sample(node.store.revision)
    sampled = {0.0: node.store.revision}
    compactions = {}
    for _ in range(steps):
        node.store.revision += WRITES_PER_STEP
        clock.advance(compactor.policy.interval_s)
        revision = await compactor.step()
        elapsed_s = round(clock() - start_s, 6)
        sampled[elapsed_s] = node.store.revision
        if revision is not None:
            compactions[elapsed_s] = revision
    return {"compactions": compactions, "sampled": sampled}


@async_test
async def test_periodic_one_hour_compacts_hourly_to_the_revision_of_an_hour_ago() -> None:
    node, clock = FakeNode(), FakeClock()
    compactor = Compactor(node, PeriodicPolicy(3600, clock()), clock=clock)
    assert compactor.policy.interval_s == 360
    result = await drive(node, clock, compactor, steps=31)
    compactions, sampled = result["compactions"], result["sampled"]
    assert sorted(compactions) == [3600.0, 7200.0, 10800.0]
    assert compactions[3600.0] == sampled[0.0]
    assert compactions[7200.0] == sampled[7200.0 - 3600 - 360]
    assert compactions[10800.0] == sampled[10800.0 - 3600 - 360]
    assert [p.compaction.revision for p in node.proposals] == list(compactions.values())
    assert node.store.compact_revision == compactions[10800.0]


@async_test
async def test_periodic_short_retention_compacts_every_retention() -> None:
    node, clock = FakeNode(), FakeClock()
    compactor = Compactor(node, make_policy("periodic", "10m", clock()), clock=clock)
    assert compactor.policy.interval_s == 60
    result = await drive(node, clock, compactor, steps=25)
    compactions, sampled = result["compactions"], result["sampled"]
    assert sorted(compactions) == [600.0, 1200.0]
    assert compactions == {600.0: sampled[0.0], 1200.0: sampled[1200.0 - 600 - 60]}


@async_test
async def test_periodic_long_retention_compacts_hourly_keeping_the_whole_retention() -> None:
    node, clock = FakeNode(), FakeClock()
    compactor = Compactor(node, make_policy("periodic", "2", clock()), clock=clock)
    assert compactor.policy.interval_s == 360  # min(2h, 1h) / 10
    result = await drive(node, clock, compactor, steps=40)
    compactions, sampled = result["compactions"], result["sampled"]
    assert sorted(compactions) == [7200.0, 10800.0, 14400.0]
    assert compactions[7200.0] == sampled[0.0]
    assert compactions[10800.0] == sampled[10800.0 - 7200 - 360]
    assert compactions[14400.0] == sampled[14400.0 - 7200 - 360]


@async_test
async def test_revision_mode_keeps_the_last_n_revisions() -> None:
    node, clock = FakeNode(), FakeClock()
    compactor = Compactor(node, RevisionPolicy(25), clock=clock)
    node.store.revision = 20
    compactor.policy.sample(node.store.revision)
    clock.advance(300)
    assert await compactor.step() is None  # 20 - 25 <= 0
    node.store.revision = 100
    clock.advance(300)
    assert await compactor.step() is None  # the sample of this pass is used next pass
    clock.advance(300)
    assert await compactor.step() == 75
    clock.advance(300)
    assert await compactor.step() is None  # same target as last time: nothing to do
    node.store.revision = 130
    clock.advance(300)
    await compactor.step()
    clock.advance(300)
    assert await compactor.step() == 105
    assert node.store.compact_revision == 105


@async_test
async def test_follower_does_not_compact_and_resumes_as_leader() -> None:
    node, clock = FakeNode(), FakeClock()
    node.is_leader = False
    compactor = Compactor(node, make_policy("periodic", "10m", clock()), clock=clock)
    result = await drive(node, clock, compactor, steps=15)
    assert result["compactions"] == {} and node.proposals == []
    node.is_leader = True
    node.store.revision += 1
    clock.advance(60)
    revision = await compactor.step()
    assert revision is not None and node.store.compact_revision == revision


@async_test
async def test_already_compacted_counts_as_success_and_other_errors_retry() -> None:
    node, clock = FakeNode(), FakeClock()
    compactor = Compactor(node, RevisionPolicy(10), clock=clock)
    node.store.revision = 50
    node.store.compact_revision = 45  # a client compacted further already
    compactor.policy.sample(node.store.revision)
    clock.advance(300)
    assert await compactor.step() == 40
    node.store.revision = 70
    compactor.policy.sample(node.store.revision)
    node.fail_proposals = RuntimeError("no leader")
    clock.advance(300)
    assert await compactor.step() is None
    node.fail_proposals = None
    clock.advance(300)
    assert await compactor.step() == 60


def test_retention_parsing() -> None:
    assert parse_duration_s("1h30m") == 5400
    assert parse_duration_s("90s") == 90
    assert parse_duration_s("1.5h") == 5400
    assert make_policy("periodic", "0", 0.0) is None
    assert make_policy("revision", "0", 0.0) is None
    periodic = make_policy("periodic", "1", 0.0)
    assert isinstance(periodic, PeriodicPolicy) and periodic.period_s == 3600
    with pytest.raises(CompactorConfigError):
        make_policy("periodic", "1x", 0.0)
    with pytest.raises(CompactorConfigError):
        make_policy("revision", "5m", 0.0)
    with pytest.raises(CompactorConfigError):
        make_policy("sometimes", "1", 0.0)
