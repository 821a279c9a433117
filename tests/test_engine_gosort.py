"""engine.gosort orders ties exactly as Go 1.19's sort.Sort does (etcd 3.4.23's build).

The expected permutations were printed by sort.Sort / sort.Sort(sort.Reverse(...)) of Go 1.19
over the same keys (index i has key f(i); the list is the indices in sorted order). A stable
sort, or any other correct sort, orders these ties differently: the fixtures cover the
insertion-sort cut-off (16 items), the ninther pivot (>= 50), a decreasing run (reversed) and
the pattern breaker.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from api.etcdserverpb import rpc_pb2 as pb
from engine import Store
from engine.gosort import sort_like_go

GO_ORDERS: list[tuple[int, bool, Callable[[int], int], list[int]]] = [
    (16, False, lambda i: (i * 7) % 2,
     [8, 6, 2, 14, 0, 12, 10, 4, 7, 9, 1, 11, 5, 13, 3, 15]),
    (60, False, lambda i: (i * 7919) % 5,
     [15, 55, 50, 45, 40, 5, 35, 30, 0, 25, 10, 20, 29, 24, 14, 49, 59, 34, 39, 19, 4, 54, 44,
      9, 23, 38, 48, 43, 28, 8, 58, 53, 18, 33, 3, 13, 57, 37, 52, 32, 7, 2, 42, 27, 22, 17, 12,
      47, 6, 46, 41, 51, 36, 31, 26, 1, 56, 21, 11, 16]),
    (40, True, lambda i: (40 - i) // 3, list(range(40))),
    (90, False, lambda i: (i * i) % 11,
     [11, 88, 77, 66, 55, 44, 0, 33, 22, 43, 78, 56, 12, 54, 89, 1, 65, 67, 87, 45, 10, 21, 34,
      23, 32, 76, 83, 50, 28, 61, 16, 17, 82, 49, 60, 5, 72, 71, 38, 39, 6, 27, 79, 68, 35, 86,
      42, 75, 20, 31, 46, 24, 64, 53, 13, 2, 9, 57, 70, 7, 15, 4, 62, 18, 84, 51, 59, 81, 48,
      26, 40, 37, 29, 73, 3, 47, 30, 36, 69, 25, 80, 74, 41, 8, 52, 85, 19, 63, 58, 14]),
    (70, True, lambda i: i % 3,
     [23, 68, 2, 65, 62, 5, 59, 56, 8, 53, 50, 11, 47, 44, 14, 41, 38, 17, 35, 32, 20, 29, 26,
      34, 46, 25, 22, 1, 28, 67, 64, 31, 19, 4, 61, 58, 7, 37, 16, 55, 40, 52, 10, 43, 13, 49,
      18, 57, 48, 45, 42, 51, 15, 9, 54, 39, 36, 12, 24, 6, 60, 0, 33, 63, 30, 3, 66, 21, 27,
      69]),
]  # fmt: skip


@pytest.mark.parametrize("n, descending, key_of, want", GO_ORDERS)
def test_ties_come_out_in_go_order(
    n: int, descending: bool, key_of: Callable[[int], int], want: list[int]
) -> None:
    """Each fixture's keys sort to the permutation Go printed."""
    items = list(range(n))
    sort_like_go(items, key_of, descending)
    assert items == want


def test_small_or_distinct_inputs_take_the_stable_path() -> None:
    """Up to 12 items Go's insertion sort is stable (also reversed); with distinct keys every
    correct sort agrees."""
    items = list(range(12))
    sort_like_go(items, lambda i: i % 2, descending=True)
    assert items == [1, 3, 5, 7, 9, 11, 0, 2, 4, 6, 8, 10]
    items = list(range(100))
    sort_like_go(items, lambda i: -i, descending=False)
    assert items == list(range(99, -1, -1))


def test_range_sorted_by_version_ties_as_etcd(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Range of 16 keys sorted by VERSION (half at version 1, half at 2) lists each tie
    group in the order etcd 3.4.23 does, not in key order."""
    store = Store.open(str(tmp_path / "db"), map_size_bytes=1 << 30)
    try:
        with store.write_batch() as b:
            for i in range(16):
                for _ in range(1 + i % 2):
                    b.put(pb.PutRequest(key=b"k%02d" % i, value=b"v"))
        req = pb.RangeRequest(key=b"k", range_end=b"l", sort_target=pb.RangeRequest.VERSION)
        got = [int(kv.key[1:]) for kv in store.range(req).kvs]
    finally:
        store.close()
    assert got == GO_ORDERS[0][3]
