"""Crash tests of the WAL over the fake file system (tests/wal_fakefs.py).

Each seed drives a random workload (batches with and without sync, Raft log truncation,
hard-state-only saves, snapshot markers, release, small segments so cuts happen often) through
several crash-and-recover cycles; each cycle dies at a random step, the fake disk keeps, drops
or tears every unsynced operation, and the WAL is reopened. Checked after every recovery:
opening never fails (a crash is never taken for corruption), every record that was synced is
there, and what is returned equals the replay of some prefix of the records written: nothing
corrupted, reordered, or invented.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from tests.wal_fakefs import Crash, FakeFS
from wal import WAL, Entry, HardState, SnapshotMarker

WAL_DIR = "/data/member/wal"
META = b"member=1 cluster=7"


def apply_record(entries: list[Entry], marker: SnapshotMarker, record: object) -> None:
    """The WAL's replay rule, written independently: an entry at index i replaces everything
    from i on; only entries above the marker are kept."""
    assert isinstance(record, Entry)
    if record.index <= marker.index:
        entries.clear()
        return
    position = record.index - marker.index - 1
    assert position <= len(entries), "the workload never leaves a gap"
    del entries[position:]
    entries.append(record)


@dataclass
class Model:
    marker: SnapshotMarker = field(default_factory=SnapshotMarker)
    base_hs: HardState = field(default_factory=HardState)
    base_entries: list[Entry] = field(default_factory=list)
    stream: list[object] = field(default_factory=list)  # records written since the base
    synced: int = 0  # how many records of `stream` are known durable
    # The state after the whole stream: what the workload generator builds on.
    hs: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)

    def write(self, records: list[object], *, synced: bool) -> None:  # noqa: D102
        for record in records:
            self.stream.append(record)
            if isinstance(record, HardState):
                self.hs = record
            else:
                apply_record(self.entries, self.marker, record)
        if synced:
            self.synced = len(self.stream)

    def rebase(self, hs: HardState, entries: list[Entry]) -> None:
        self.base_hs, self.base_entries = hs, list(entries)
        self.hs, self.entries = hs, list(entries)
        self.stream, self.synced = [], 0

    def snapshot_done(self, marker: SnapshotMarker) -> None:
        """save_snapshot synced everything: the whole current state is now the base."""
        self.marker = marker
        self.rebase(self.hs, [e for e in self.entries if e.index > marker.index])

    def matching_prefix(self, hs: HardState, entries: list[Entry]) -> int | None:
        """The length k >= synced of a stream prefix whose replay gives (hs, entries)."""
        cur_hs, cur = self.base_hs, list(self.base_entries)
        for k in range(len(self.stream) + 1):
            if k > 0:
                record = self.stream[k - 1]
                if isinstance(record, HardState):
                    cur_hs = record
                else:
                    apply_record(cur, self.marker, record)
            if k >= self.synced and cur_hs == hs and cur == entries:
                return k
        return None


def random_batch(rng: random.Random, model: Model) -> tuple[list[object], bool]:
    """Entries (maybe overwriting the uncommitted tail with a higher term) and a hard state."""
    last = model.entries[-1].index if model.entries else model.marker.index
    term = max(model.hs.term, 1)
    commit = model.hs.commit
    start = last + 1
    if rng.random() < 0.15 and last > commit:
        start = rng.randint(commit + 1, last)
        term += 1
    records: list[object] = []
    for i in range(rng.choice([0, 1, 1, 2, 3, 8])):
        data = rng.randbytes(rng.choice([0, 5, 40, 200, 700]))
        records.append(Entry(start + i, term, rng.randrange(3), data))
    new_last = records[-1].index if records else last  # type: ignore[attr-defined]
    if not records or rng.random() < 0.5:
        records.append(
            HardState(term, rng.randrange(4), rng.randint(commit, max(commit, new_last)))
        )
    return records, rng.random() < 0.6


def run_cycle(fs: FakeFS, rng: random.Random, model: Model, segment_bytes: int) -> None:
    """Opens (or creates) the log, checks it against the model, then runs a workload until the
    crash step comes or the workload ends."""
    if not fs.exists(WAL_DIR):
        wal = WAL.create(WAL_DIR, META, fs=fs, segment_bytes=segment_bytes)
        assert model.synced == 0 and not model.base_entries, "a synced WAL vanished"
        model.rebase(HardState(), [])
    else:
        wal, meta, hs, entries = WAL.open(WAL_DIR, model.marker, fs=fs, segment_bytes=segment_bytes)
        assert meta == META
        k = model.matching_prefix(hs, entries)
        assert k is not None, f"recovered state is no synced prefix: {hs} {entries[-3:]}"
        model.rebase(hs, entries)
    for _ in range(rng.randint(1, 15)):
        roll = rng.random()
        if roll < 0.8:
            records, sync = random_batch(rng, model)
            entries = [r for r in records if isinstance(r, Entry)]
            states = [r for r in records if isinstance(r, HardState)]
            # The model hears of the batch first: a crash inside save may still keep it.
            model.write(records, synced=False)
            wal.save(states[0] if states else None, entries, sync=sync)
            if sync:
                model.synced = len(model.stream)
        elif roll < 0.93:
            committed = [e for e in model.entries if e.index <= model.hs.commit]
            if committed:
                e = rng.choice(committed)
                marker = SnapshotMarker(e.index, e.term)
                wal.save_snapshot(marker)
                model.snapshot_done(marker)
                wal.release_to(marker.index, keep=rng.choice([1, 2, 3]))
        else:
            wal.close()
            return
    wal.close()


def crash_run(seed: int, cycles: int) -> tuple[int, int]:
    """One seeded run; returns how many crashes it survived and how many torn tails the WAL
    repaired on the way (its `.broken` copies)."""
    rng = random.Random(seed)
    fs = FakeFS()
    fs.makedirs("/data/member")
    model = Model()
    segment_bytes = rng.choice([512, 1024, 4096, 1 << 16])
    crashes = 0
    for _ in range(cycles):
        fs.crash_at = fs.steps + rng.randint(1, 40)
        try:
            run_cycle(fs, rng, model, segment_bytes)
        except Crash:
            crashes += 1
            fs.crash(rng)
        fs.crash_at = None
    # A final clean open checks the last crash too.
    run_cycle_checks_only(fs, model, segment_bytes)
    repairs = (
        sum(name.endswith(".broken") for name in fs.listdir(WAL_DIR)) if fs.exists(WAL_DIR) else 0
    )
    return crashes, repairs


def run_cycle_checks_only(fs: FakeFS, model: Model, segment_bytes: int) -> None:
    if not fs.exists(WAL_DIR):
        assert model.synced == 0 and not model.base_entries
        return
    wal, _, hs, entries = WAL.open(WAL_DIR, model.marker, fs=fs, segment_bytes=segment_bytes)
    assert model.matching_prefix(hs, entries) is not None
    wal.close()


def test_crash_points_keep_synced_records() -> None:
    """2,500+ seeded crash points: synced records survive, recovery returns a prefix; many of
    them needed a torn-tail repair."""
    crashes = repairs = 0
    for seed in range(800):
        try:
            c, r = crash_run(seed, cycles=6)
        except BaseException:
            print(f"failing seed: {seed} (replay: crash_run({seed}, cycles=6))")
            raise
        crashes += c
        repairs += r
    print(f"crashes {crashes}, torn tails repaired {repairs}")
    assert crashes >= 2500, crashes
    assert repairs >= 100, repairs


@pytest.mark.slow
def test_crash_points_keep_synced_records_long() -> None:
    """The same over 20,000+ crash points."""
    crashes = 0
    for seed in range(10_000, 18_000):
        try:
            crashes += crash_run(seed, cycles=6)[0]
        except BaseException:
            print(f"failing seed: {seed} (replay: crash_run({seed}, cycles=6))")
            raise
    assert crashes >= 20_000, crashes


def test_fake_fs_loses_unsynced_writes() -> None:
    """The fake disk itself: a synced write survives every crash, an unsynced one does not
    always survive (else the crash tests above would prove nothing)."""
    survived = 0
    for seed in range(50):
        fs = FakeFS()
        fs.makedirs("/d")
        f = fs.open("/d/f", create=True)
        fs.sync_dir("/d")
        f.pwrite(b"a" * 1024, 0)
        f.datasync()
        f.pwrite(b"b" * 1024, 1024)
        fs.crash(random.Random(seed))
        data = fs.read_file("/d/f")
        assert data[:1024] == b"a" * 1024
        survived += data[1024:] == b"b" * 1024
    assert 0 < survived < 50
