"""Crash tests: a child process is killed with SIGKILL while it applies batches, and while it
compacts. After reopening, the store must equal exactly the first `consistent_index` batches
applied cleanly (atomic batches, index in the same transaction), every batch the child reported
as committed must be there, and an interrupted compaction must resume to the same end state as
an uninterrupted one.

Seeds are fixed; each assertion message names the seed and kill point.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from api.etcdserverpb import rpc_pb2 as pb
from engine import Store
from tests.engine_crash_child import apply_batch

ROOT = Path(__file__).resolve().parent.parent


def run_and_kill(args: list[str], lines_before_kill: int) -> list[str]:
    """Start the child, read `lines_before_kill` progress lines, SIGKILL it at once."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.engine_crash_child", *args],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    try:
        while len(seen) < lines_before_kill:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line.strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return seen


def dump(store: Store) -> dict[str, Any]:
    """Everything observable: raw tables (minus compaction bookkeeping) and counters."""
    out: dict[str, Any] = {"rev": store.revision, "ci": store.consistent_index}
    with store.env.begin() as txn:
        for name in ("idx", "log", "lease", "lkeys"):
            db = getattr(store.dbs, name)
            out[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
        meta = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=store.dbs.meta)]
        out["meta"] = [kv for kv in meta if kv[0] not in (b"compact_cursor",)]
    return out


def reference(path: Path, seed: int, batches: int) -> Store:
    s = Store.open(str(path), map_size_bytes=1 << 30)
    for i in range(1, batches + 1):
        with s.write_batch(sync=False) as b:
            apply_batch(b, seed, i)
    return s


def test_kill_while_applying_batches(tmp_path: Path) -> None:
    """SIGKILL at a random point of a stream of synced batches: the reopened store is exactly
    the first consistent_index batches, which include every batch reported committed; a second
    child resumes from there."""
    for seed in (1, 2, 3, 4):
        rng = random.Random(seed)
        path = tmp_path / f"crash{seed}"
        kill_at = rng.randint(3, 60)
        # seed 4 commits without fsync: a process crash (not a power cut) still loses nothing
        extra = ["nosync"] if seed == 4 else []
        seen = run_and_kill(["apply", str(path), str(seed), *extra], kill_at)
        # resume once more and kill again: recovery composes
        seen2 = run_and_kill(["apply", str(path), str(seed), *extra], rng.randint(1, 20))
        store = Store.open(str(path), map_size_bytes=1 << 30)
        ci = store.consistent_index
        acked = int((seen2 or seen)[-1].split()[1])
        assert ci >= acked, f"seed {seed}: committed batch {acked} lost (ci {ci})"
        ref = reference(tmp_path / f"ref{seed}", seed, ci)
        assert dump(store) == dump(ref), f"seed {seed} kill_at {kill_at}: state != prefix {ci}"
        assert store.hash_kv(0) == ref.hash_kv(0)
        store.close()
        ref.close()


def test_kill_while_compacting(tmp_path: Path) -> None:
    """SIGKILL in the middle of a compaction done in tiny batches: after reopening, the pending
    compaction resumes and the result equals an uninterrupted compaction, byte for byte."""
    seed = 7
    base = reference(tmp_path / "base", seed, 300)
    target = base.revision - 40
    base.close()
    for kill_at in (2, 9, 30):
        path = tmp_path / f"c{kill_at}"
        shutil.copytree(tmp_path / "base", path)
        seen = run_and_kill(["compact", str(path), str(target)], kill_at)
        assert "done" not in seen, "the kill came too late to interrupt the compaction"
        store = Store.open(str(path), map_size_bytes=1 << 30)
        assert store.compact_revision == target
        assert store.compaction_pending(), f"kill_at {kill_at}: the compaction had finished"
        while store.compaction_step(4):
            pass
        ref_path = tmp_path / f"r{kill_at}"
        shutil.copytree(tmp_path / "base", ref_path)
        ref = Store.open(str(ref_path), map_size_bytes=1 << 30)
        with ref.write_batch() as b:
            b.compact(target)
        while ref.compaction_step():
            pass
        assert dump(store) == dump(ref), f"seed {seed} kill_at {kill_at}"
        for rev in range(target, store.revision + 1, 7):
            req = pb.RangeRequest(key=b"\x00", range_end=b"\x00", revision=rev)
            assert store.range(req) == ref.range(req)
        store.close()
        ref.close()


def test_kill_while_defragmenting(tmp_path: Path) -> None:
    """SIGKILL while the child defragments over and over: the reopened store holds the same
    data (the swap is a rename of a fully synced copy)."""
    seed = 11
    ref = reference(tmp_path / "ref", seed, 200)
    ref.close()
    for kill_at in (0, 1, 3):
        path = tmp_path / f"d{kill_at}"
        shutil.copytree(tmp_path / "ref", path)
        run_and_kill(["defrag", str(path), "1000"], kill_at)
        store = Store.open(str(path), map_size_bytes=1 << 30)
        ref = Store.open(str(tmp_path / "ref"), map_size_bytes=1 << 30)
        assert dump(store) == dump(ref), f"kill_at {kill_at}"
        store.close()
        ref.close()
