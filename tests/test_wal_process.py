"""Real processes: a child appends synced batches and reports each; it is SIGKILLed at random
moments, or at each WAL failpoint; reopening must find every reported batch, byte for byte."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys

import pytest

from tests.wal_child import entry_data
from wal import WAL, SnapshotMarker, errors, failpoints

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEGMENT_BYTES = 4096


def start_child(d: str, marker: SnapshotMarker, batches_max: int, seed: int, failpoints: str = ""):  # noqa: ANN201
    env = dict(os.environ, PYTHONPATH=str(ROOT), PETRA_FAILPOINTS=failpoints)
    args = [sys.executable, "-m", "tests.wal_child", d, str(SEGMENT_BYTES)]
    args += [str(marker.index), str(marker.term), str(batches_max), str(seed)]
    return subprocess.Popen(args, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, text=True)


def read_reports(
    lines: list[str], acked: int, marker: SnapshotMarker
) -> tuple[int, SnapshotMarker]:
    for line in lines:
        kind, *nums = line.split()
        if kind == "ok":
            acked = max(acked, int(nums[0]))
        elif kind == "snap":
            marker = SnapshotMarker(int(nums[0]), int(nums[1]))
    return acked, marker


def check_log(d: str, marker: SnapshotMarker, acked: int) -> int:
    """Every acknowledged entry is there with its exact data; returns the last index."""
    wal, meta, hs, entries = WAL.open(d, marker, segment_bytes=SEGMENT_BYTES)
    wal.close()
    assert meta == b"child"
    indexes = [e.index for e in entries]
    assert indexes == list(range(marker.index + 1, marker.index + 1 + len(entries)))
    for e in entries:
        assert e.data == entry_data(e.index) and e.term == 1
    last = indexes[-1] if indexes else marker.index
    assert last >= acked, f"acknowledged entry {acked} lost; log ends at {last}"
    assert hs.commit >= acked
    return last


def test_sigkill_at_random_moments(tmp_path) -> None:
    """Five rounds of: run the child, SIGKILL it after a random number of reports, reopen."""
    seed = 4242
    rng = random.Random(seed)
    d = str(tmp_path / "wal")
    marker, acked = SnapshotMarker(0, 0), 0
    for round_ in range(5):
        child = start_child(d, marker, batches_max=10_000, seed=seed + round_)
        assert child.stdout is not None
        lines = []
        for _ in range(rng.randint(1, 120)):
            lines.append(child.stdout.readline())
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=60)
        lines += rest.splitlines()
        assert child.returncode == -signal.SIGKILL
        acked, marker = read_reports(lines, acked, marker)
        check_log(d, marker, acked)
    print(f"seed {seed}: {acked} entries acknowledged, log intact")


# Every failpoint of wal/ (a new one is covered without editing this list).
@pytest.mark.parametrize("point", [p for p in failpoints.KNOWN if p.startswith("wal.")])
def test_kill_at_each_failpoint(tmp_path, point: str) -> None:
    """The child dies by SIGKILL at the 3rd hit of the point (so the point is reached); the
    log reopens with every acknowledged batch, and a new child carries on from it."""
    d = str(tmp_path / "wal")
    child = start_child(d, SnapshotMarker(0, 0), 400, seed=1, failpoints=f"{point}:kill@3")
    out, _ = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, f"{point} never fired"
    acked, marker = read_reports(out.splitlines(), 0, SnapshotMarker(0, 0))
    last = check_log(d, marker, acked)
    child = start_child(d, marker, 5, seed=2)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    acked, marker = read_reports(out.splitlines(), last, marker)
    check_log(d, marker, acked)


def test_lock_keeps_another_process_out(tmp_path) -> None:
    """While a child process has the log open, this process cannot open it; once the child
    is dead (its flock gone with it), it can."""
    d = str(tmp_path / "wal")
    child = start_child(d, SnapshotMarker(0, 0), batches_max=100_000, seed=3)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("ok")
    with pytest.raises(errors.LockedError):
        WAL.open(d, SnapshotMarker(0, 0), segment_bytes=SEGMENT_BYTES)
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=60)
    acked, marker = read_reports([line, *rest.splitlines()], 0, SnapshotMarker(0, 0))
    check_log(d, marker, acked)
