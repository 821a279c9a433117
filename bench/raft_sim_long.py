"""The Raft simulator over a very large number of seeds (the CI suite runs a few hundred).

Runs `python -m tests.raft_sim` in worker processes (the simulator lives under tests/, which
bench/ does not import) over consecutive seed ranges, rotating through the fault profiles:
1, 3 and 5 members; membership changes; the CHAOS schedule; a leader that sends before it
persists and may crash in between. Prints progress, the total, and
for any failure the seed and the command that replays it.

    python -m bench.raft_sim_long --seeds 100000 [--start 0] [--jobs 2] [--chunk 500]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

PROFILES = [
    ["--members", "3"],
    ["--members", "5"],
    ["--members", "1"],
    ["--members", "3", "--membership"],
    ["--members", "3", "--chaos"],
    ["--members", "5", "--membership"],
    ["--members", "5", "--chaos"],
    ["--members", "3", "--leader-sends-first"],
    ["--members", "5", "--leader-sends-first", "--membership"],
]


def run_chunk(start: int, count: int, profile: list[str]) -> tuple[bool, str]:
    cmd = [sys.executable, "-m", "tests.raft_sim", "--seed", str(start), "--seeds", str(count)]
    proc = subprocess.run(
        cmd + profile, capture_output=True, text=True, cwd=ROOT, env=os.environ | ENV, check=False
    )
    out = (proc.stdout + proc.stderr).strip()
    return proc.returncode == 0, f"[{' '.join(profile)}] {out}"


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {"PYTHONPATH": ROOT}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100_000)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=500)
    args = ap.parse_args()
    starts = range(args.start, args.start + args.seeds, args.chunk)
    profiles = itertools.cycle(PROFILES)
    work = [(s, min(args.chunk, args.start + args.seeds - s), next(profiles)) for s in starts]
    t0 = time.monotonic()
    done = failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        results = pool.map(lambda w: run_chunk(*w), work)
        for (start, count, _), (ok, out) in zip(work, results, strict=True):
            done += count
            if not ok:
                failed += 1
                print(f"FAILED chunk from seed {start}:\n{out}", flush=True)
            else:
                rate = done / (time.monotonic() - t0)
                print(f"{done} seeds ({rate:.0f}/s): {out}", flush=True)
    elapsed = time.monotonic() - t0
    print(f"{done} seeds in {elapsed:.0f} s, {failed} failing chunks")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
