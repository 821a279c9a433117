"""Child process of tests/test_engine_crash.py: applies work and reports progress on stdout
until the parent kills it with SIGKILL.

    python -m tests.engine_crash_child apply <dir> <seed> [nosync]   # batches 1.. (batch i is
                                                             # a pure function of seed and i)
    python -m tests.engine_crash_child compact <dir> <rev>   # compact in tiny steps
    python -m tests.engine_crash_child defrag <dir> <times>  # defragment again and again
"""

from __future__ import annotations

import random
import sys

from api.etcdserverpb import rpc_pb2 as pb
from engine import Store, compaction
from engine.batch import WriteBatch

BATCHES_MAX = 100_000


def apply_batch(b: WriteBatch, seed: int, i: int) -> None:
    """Batch i: a few puts, deletes and a txn over a small key space, then consistent index i."""
    rng = random.Random(seed * 1_000_003 + i)
    if i % 10 == 1:
        b.lease_grant(i, 30)
    for _ in range(rng.randint(1, 6)):
        k = b"k%02d" % rng.randrange(40)
        roll = rng.random()
        if roll < 0.6:
            b.put(pb.PutRequest(key=k, value=b"%d-%d" % (i, rng.randrange(1000)) * 20))
        elif roll < 0.8:
            b.delete_range(pb.DeleteRangeRequest(key=k, range_end=b"k%02d" % rng.randrange(40)))
        else:
            t = pb.TxnRequest(
                compare=[pb.Compare(key=k, target=pb.Compare.VERSION, result=pb.Compare.GREATER)],
                success=[pb.RequestOp(request_put=pb.PutRequest(key=k + b"/t", value=b"%d" % i))],
                failure=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=k + b"/t"))],
            )
            b.txn(t)
    b.set_consistent_index(i)


def main() -> None:
    mode, path, arg = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store.open(path, map_size_bytes=1 << 30)
    if mode == "apply":
        for i in range(store.consistent_index + 1, BATCHES_MAX):
            with store.write_batch(sync=len(sys.argv) < 5) as b:
                apply_batch(b, arg, i)
            print(f"applied {i}", flush=True)
    elif mode == "defrag":
        for _ in range(arg):
            store.defragment()
            print("defragmented", flush=True)
    else:
        compaction.BATCH_RECORDS_MAX = 4
        if store.compact_revision < arg:
            with store.write_batch() as b:
                b.compact(arg)
            print("scheduled", flush=True)
        while store.compaction_step(4):
            store.sync()  # an fsync per step keeps the child from racing far past the kill point
            print("step", flush=True)
        print("done", flush=True)


if __name__ == "__main__":
    main()
