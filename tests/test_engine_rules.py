"""One test per etcd rule the engine implements (reference: etcd-internals.md §2-§4, §7).

Each test builds a fresh store in tmp_path, applies a few operations and checks the exact
outcome etcd 3.4 gives.
"""

from __future__ import annotations

import pytest

from api.etcdserverpb import rpc_pb2 as pb
from api.mvccpb import kv_pb2
from engine import Compacted, Store, errors, keys
from engine.validate import check_txn


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    s = Store.open(str(tmp_path / "db"), map_size_bytes=1 << 30)
    yield s
    s.close()


def put(s: Store, key: bytes, value: bytes = b"v", lease: int = 0) -> pb.PutResponse:
    with s.write_batch() as b:
        return b.put(pb.PutRequest(key=key, value=value, lease=lease))


def get(s: Store, key: bytes, end: bytes = b"", rev: int = 0) -> list[tuple[bytes, bytes]]:
    r = s.range(pb.RangeRequest(key=key, range_end=end, revision=rev))
    return [(kv.key, kv.value) for kv in r.kvs]


def op_put(k: bytes, v: bytes = b"v") -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=k, value=v))


def op_del(k: bytes, end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=k, range_end=end))


# ---- revisions -------------------------------------------------------------------------------
def test_revision_counting(store: Store) -> None:
    """New store at 1; each changing write txn adds exactly 1; no-op deletes, read-only txns and
    lease grants add nothing; all changes of a txn share one main revision."""
    assert store.revision == 1
    assert put(store, b"a").header.revision == 2
    assert put(store, b"a").header.revision == 3  # same value still a new revision
    with store.write_batch() as b:
        r = b.delete_range(pb.DeleteRangeRequest(key=b"zzz"))
        assert (r.deleted, r.header.revision) == (0, 3)
        t = b.txn(pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"a"))]))
        assert t.header.revision == 3
        b.lease_grant(7, 60)
        t = b.txn(pb.TxnRequest(success=[op_put(b"x"), op_put(b"y"), op_del(b"a")]))
        assert t.header.revision == 4
    assert store.revision == 4
    kvs = store.range(pb.RangeRequest(key=b"x", range_end=b"z")).kvs
    assert [(kv.key, kv.mod_revision, kv.create_revision, kv.version) for kv in kvs] == [
        (b"x", 4, 4, 1),
        (b"y", 4, 4, 1),
    ]
    w = store.watch_hub.watch(b"\x00", b"\x00", 4)
    evs = w.take(100)
    assert [(e.type, e.kv.key) for e in evs] == [
        (kv_pb2.Event.PUT, b"x"),
        (kv_pb2.Event.PUT, b"y"),
        (kv_pb2.Event.DELETE, b"a"),
    ]


def test_version_resets_after_delete(store: Store) -> None:
    """version counts puts since creation and restarts at 1 after a delete; create_revision is
    the put that started the generation."""
    put(store, b"k")
    put(store, b"k")
    with store.write_batch() as b:
        b.delete_range(pb.DeleteRangeRequest(key=b"k"))
    put(store, b"k")
    kv = store.range(pb.RangeRequest(key=b"k")).kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (5, 5, 1)
    old = store.range(pb.RangeRequest(key=b"k", revision=3)).kvs[0]
    assert (old.create_revision, old.mod_revision, old.version) == (2, 3, 2)
    assert store.range(pb.RangeRequest(key=b"k", revision=4)).count == 0


# ---- range_end forms ------------------------------------------------------------------------
def test_range_end_forms(store: Store) -> None:
    """'' one key; prefix end; '\\0' from key; '\\0'..'\\0' everything; end <= key: empty."""
    for k in [b"\x00", b"a", b"a/1", b"a/2", b"b", b"\xff"]:
        put(store, k)
    assert [k for k, _ in get(store, b"a")] == [b"a"]
    assert [k for k, _ in get(store, b"a/", keys.prefix_end(b"a/"))] == [b"a/1", b"a/2"]
    assert [k for k, _ in get(store, b"b", b"\x00")] == [b"b", b"\xff"]
    assert len(get(store, b"\x00", b"\x00")) == 6
    assert get(store, b"b", b"a") == []
    assert get(store, b"b", b"b") == []
    assert keys.prefix_end(b"\xff\xff") == b"\x00"
    assert keys.prefix_end(b"a\xff") == b"b"


def test_limit_count_and_sort(store: Store) -> None:
    """count ignores limit; more says there was more; sort by a target defaults to ascending."""
    for i, k in enumerate([b"a", b"b", b"c"]):
        for _ in range(3 - i):
            put(store, k, bytes([ord("z") - i]))
    r = store.range(pb.RangeRequest(key=b"a", range_end=b"d", limit=2))
    assert (r.count, len(r.kvs), r.more) == (3, 2, True)
    r = store.range(pb.RangeRequest(key=b"a", range_end=b"d", sort_target=pb.RangeRequest.VERSION))
    assert [kv.key for kv in r.kvs] == [b"c", b"b", b"a"]
    r = store.range(
        pb.RangeRequest(
            key=b"a",
            range_end=b"d",
            sort_order=pb.RangeRequest.DESCEND,
            sort_target=pb.RangeRequest.KEY,
            limit=1,
            keys_only=True,
        )
    )
    assert [(kv.key, kv.value) for kv in r.kvs] == [(b"c", b"")] and r.more
    r = store.range(pb.RangeRequest(key=b"a", range_end=b"d", count_only=True))
    assert (r.count, len(r.kvs)) == (3, 0)
    r = store.range(pb.RangeRequest(key=b"a", range_end=b"d", min_mod_revision=5))
    assert [kv.key for kv in r.kvs] == [b"b", b"c"] and r.count == 3


def test_sort_target_without_order_limits_in_key_order_first(store: Store) -> None:
    """A non-KEY sort target with order NONE sorts ascending, but etcd 3.4 fetches only limit + 1
    keys in key order before sorting (it picks what to fetch from the order as sent); with
    ASCEND, or with a min/max filter, everything is fetched and sorted before the limit."""
    for k in (b"c", b"a", b"b"):  # key order a, b, c; creation order c, a, b
        put(store, k)

    def keys(limit: int, order: int, **filters: int) -> list[bytes]:
        req = pb.RangeRequest(key=b"a", range_end=b"d", limit=limit, **filters)
        req.sort_order, req.sort_target = order, pb.RangeRequest.CREATE  # type: ignore[assignment]
        r = store.range(req)
        assert r.count == 3 and r.more == (0 < limit < 3)
        return [kv.key for kv in r.kvs]

    assert keys(1, pb.RangeRequest.NONE) == [b"a"]  # of [a, b], the first created
    assert keys(2, pb.RangeRequest.NONE) == [b"c", b"a"]  # a, b, c all fetched
    assert keys(1, pb.RangeRequest.ASCEND) == [b"c"]
    assert keys(1, pb.RangeRequest.NONE, min_mod_revision=1) == [b"c"]
    assert keys(0, pb.RangeRequest.NONE) == [b"c", b"a", b"b"]


# ---- compacted vs future ---------------------------------------------------------------------
def test_compacted_and_future_revisions(store: Store) -> None:
    """Reading at the compaction revision works; below fails 'compacted'; above current fails
    'future'. Compacting at or below the last compaction fails 'compacted', above current
    'future'."""
    for i in range(5):
        put(store, b"k", str(i).encode())  # revisions 2..6
    with store.write_batch() as b:
        b.compact(4)
    assert get(store, b"k", rev=4) == [(b"k", b"2")]
    with pytest.raises(errors.CompactedError):
        store.range(pb.RangeRequest(key=b"k", revision=3))
    with pytest.raises(errors.FutureRevisionError):
        store.range(pb.RangeRequest(key=b"k", revision=7))
    assert get(store, b"k", rev=6) == [(b"k", b"4")]
    for bad, err in [(4, errors.CompactedError), (3, errors.CompactedError)]:
        with store.write_batch() as b, pytest.raises(err):
            b.compact(bad)
    with store.write_batch() as b, pytest.raises(errors.FutureRevisionError):
        b.compact(7)
    assert str(errors.CompactedError()) == "mvcc: required revision has been compacted"
    assert str(errors.FutureRevisionError()) == "mvcc: required revision is a future revision"


def test_compaction_drops_tombstoned_history(store: Store) -> None:
    """A key deleted below the compaction revision loses its whole history; a live key keeps
    its newest revision <= C; a tombstone at exactly C stays (so a watch from C sees that
    delete, unlike etcd 3.4: etcd#19179) until the next compaction removes it."""

    def tables() -> tuple[list[tuple[int, int, bool]], int]:
        with store.env.begin() as txn:
            n_idx = sum(1 for _ in txn.cursor(db=store.dbs.idx))
            log = [keys.parse_rev_key(bytes(k)) for k, _ in txn.cursor(db=store.dbs.log)]
        return log, n_idx

    put(store, b"gone")  # 2
    put(store, b"kept", b"1")  # 3
    with store.write_batch() as b:
        b.delete_range(pb.DeleteRangeRequest(key=b"gone"))  # 4
    put(store, b"kept", b"2")  # 5
    with store.write_batch() as b:
        b.compact(4)
    assert not store.compaction_pending()
    assert tables() == ([(3, 0, False), (4, 0, True), (5, 0, False)], 3)
    assert get(store, b"kept", rev=4) == [(b"kept", b"1")]
    assert get(store, b"gone", rev=4) == []
    w = store.watch_hub.watch(b"\x00", b"\x00", 4)
    assert [(e.type, e.kv.key) for e in w.take(10)] == [
        (kv_pb2.Event.DELETE, b"gone"),
        (kv_pb2.Event.PUT, b"kept"),
    ]
    with store.write_batch() as b:
        b.compact(5)
    assert tables() == ([(5, 0, False)], 1)


# ---- txn -------------------------------------------------------------------------------------
def test_txn_validation_rules() -> None:
    """max ops (nested txns count against what is left), empty keys, empty ops, and the
    duplicate-key rule per branch."""
    many = pb.TxnRequest(success=[op_put(bytes([i % 250 + 1, i // 250 + 1])) for i in range(129)])
    with pytest.raises(errors.TooManyOpsError):
        check_txn(many, 128)
    check_txn(pb.TxnRequest(success=many.success[:128]), 128)
    inner = pb.TxnRequest(success=[op_put(b"x"), op_put(b"y")])
    nested = pb.TxnRequest(success=[op_put(b"a"), op_put(b"b"), pb.RequestOp(request_txn=inner)])
    check_txn(nested, 5)
    with pytest.raises(errors.TooManyOpsError):
        check_txn(nested, 4)  # 3 at the top leaves 1 for the nested txn's 2
    bad = [
        (pb.TxnRequest(success=[op_put(b"a"), op_put(b"a")]), errors.DuplicateKeyError),
        (pb.TxnRequest(success=[op_del(b"a", b"c"), op_put(b"b")]), errors.DuplicateKeyError),
        (pb.TxnRequest(success=[op_put(b"a"), op_del(b"a")]), errors.DuplicateKeyError),
        (
            pb.TxnRequest(
                success=[
                    op_put(b"a"),
                    pb.RequestOp(request_txn=pb.TxnRequest(failure=[op_put(b"a")])),
                ]
            ),
            errors.DuplicateKeyError,
        ),
        (pb.TxnRequest(success=[pb.RequestOp()]), errors.KeyNotFoundError),
        (pb.TxnRequest(compare=[pb.Compare()]), errors.EmptyKeyError),
        (pb.TxnRequest(failure=[op_put(b"")]), errors.EmptyKeyError),
    ]
    for req, err in bad:
        with pytest.raises(err):
            check_txn(req, 128)
    both = pb.TxnRequest(success=[op_put(b"x"), op_put(b"y")], failure=[op_put(b"x")])
    check_txn(pb.TxnRequest(success=[pb.RequestOp(request_txn=both)]), 128)
    check_txn(pb.TxnRequest(success=[op_del(b"a", b"c"), op_del(b"b", b"d")]), 128)
    check_txn(pb.TxnRequest(success=[op_del(b"a"), op_put(b"a\x00")]), 128)
    # etcd quirk: a from-key delete ('\0' end) builds an empty interval, so no conflict.
    check_txn(pb.TxnRequest(success=[op_del(b"a", b"\x00"), op_put(b"b")]), 128)


def test_txn_compares_and_reads_own_writes(store: Store) -> None:
    """Compares see the state before the txn (even for nested txns); ranges inside it see its
    earlier writes; VALUE compares on a missing key are false; numbers compare against 0."""
    put(store, b"a", b"1")
    cmp_missing_value = pb.Compare(key=b"nope", target=pb.Compare.VALUE, value=b"")
    cmp_missing_ver = pb.Compare(key=b"nope", target=pb.Compare.VERSION, version=0)
    nested = pb.TxnRequest(
        compare=[pb.Compare(key=b"b", target=pb.Compare.VERSION, version=0)],
        success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"b"))],
    )
    req = pb.TxnRequest(
        compare=[cmp_missing_ver, pb.Compare(key=b"a", target=pb.Compare.VALUE, value=b"1")],
        success=[op_put(b"b", b"2"), pb.RequestOp(request_txn=nested)],
    )
    with store.write_batch() as b:
        r = b.txn(req)
        assert r.succeeded and r.responses[1].response_txn.succeeded
        inner_range = r.responses[1].response_txn.responses[0].response_range
        assert [kv.value for kv in inner_range.kvs] == [b"2"]
        r2 = b.txn(pb.TxnRequest(compare=[cmp_missing_value], failure=[op_put(b"c")]))
        assert not r2.succeeded
    ranged = pb.Compare(
        key=b"a", range_end=b"z", target=pb.Compare.MOD, result=pb.Compare.GREATER, mod_revision=1
    )
    with store.write_batch() as b:
        assert b.txn(pb.TxnRequest(compare=[ranged])).succeeded
        ranged.mod_revision = 2
        assert not b.txn(pb.TxnRequest(compare=[ranged])).succeeded


def test_failed_op_changes_nothing_and_batch_goes_on(store: Store) -> None:
    """A txn whose put names an unknown lease fails whole; the batch's other ops commit."""
    with store.write_batch() as b:
        b.put(pb.PutRequest(key=b"a"))
        bad = pb.TxnRequest(
            success=[op_put(b"b"), pb.RequestOp(request_put=pb.PutRequest(key=b"c", lease=5))]
        )
        with pytest.raises(errors.LeaseNotFoundError):
            b.txn(bad)
        with pytest.raises(errors.KeyNotFoundError):
            b.put(pb.PutRequest(key=b"zz", ignore_value=True))
        b.put(pb.PutRequest(key=b"d"))
        b.set_consistent_index(9)
    assert [k for k, _ in get(store, b"a", b"z")] == [b"a", b"d"]
    assert store.revision == 3 and store.consistent_index == 9


def test_txn_checks_every_put_before_any_range(store: Store) -> None:
    """etcd 3.4's applier checks the chosen path in passes: all puts (a missing key for
    ignore_value before an unknown lease), then all ranges' revisions; so a put's error wins
    over a compacted or future range listed before it, nested txns included. A plain Put checks
    the lease before the key."""
    for k in (b"a", b"b", b"c"):
        put(store, k)
    with store.write_batch() as b:
        b.compact(3)
    compacted = pb.RequestOp(request_range=pb.RangeRequest(key=b"a", revision=2))
    future = pb.RequestOp(request_range=pb.RangeRequest(key=b"a", revision=99))
    missing = pb.RequestOp(request_put=pb.PutRequest(key=b"none", ignore_value=True))
    no_lease = pb.RequestOp(request_put=pb.PutRequest(key=b"l", lease=77))
    both = pb.RequestOp(request_put=pb.PutRequest(key=b"none", ignore_value=True, lease=77))
    nested = pb.RequestOp(request_txn=pb.TxnRequest(success=[no_lease]))
    cases = [
        ([compacted, missing], errors.KeyNotFoundError),
        ([future, no_lease], errors.LeaseNotFoundError),
        ([compacted, nested], errors.LeaseNotFoundError),
        ([both], errors.KeyNotFoundError),
        ([future, compacted], errors.FutureRevisionError),
        ([compacted, op_put(b"x")], errors.CompactedError),
    ]
    for ops, err in cases:
        with store.write_batch() as b, pytest.raises(err):
            b.txn(pb.TxnRequest(success=ops))
    with store.write_batch() as b, pytest.raises(errors.LeaseNotFoundError):
        b.put(both.request_put)
    assert store.revision == 4


def test_aborted_batch_leaves_nothing(store: Store) -> None:
    """An exception inside the batch aborts all of it, consistent index included."""
    with pytest.raises(RuntimeError), store.write_batch() as b:
        b.put(pb.PutRequest(key=b"a"))
        b.set_consistent_index(3)
        raise RuntimeError("crash in the applier")
    assert store.revision == 1 and store.consistent_index == 0 and get(store, b"a") == []
    assert put(store, b"a").header.revision == 2


# ---- put options and leases --------------------------------------------------------------------
def test_put_options_and_leases(store: Store) -> None:
    """ignore_value/ignore_lease keep the current ones; a new lease detaches the old one;
    revoking deletes the lease's keys at one revision."""
    with store.write_batch() as b:
        b.lease_grant(1, 10)
        b.lease_grant(2, 20)
        with pytest.raises(errors.LeaseExistsError):
            b.lease_grant(1, 5)
        b.put(pb.PutRequest(key=b"a", value=b"va", lease=1))
        b.put(pb.PutRequest(key=b"b", value=b"vb", lease=1))
        b.put(pb.PutRequest(key=b"c", value=b"vc", lease=1))
        b.put(pb.PutRequest(key=b"a", ignore_value=True, lease=2))
        r = b.put(pb.PutRequest(key=b"b", value=b"new", ignore_lease=True, prev_kv=True))
        assert r.prev_kv.value == b"vb"
    assert store.lease_ttl_info(1) == (10, [b"b", b"c"])
    assert store.lease_ttl_info(2) == (20, [b"a"])
    assert get(store, b"a") == [(b"a", b"va")]
    with store.write_batch() as b:
        b.lease_revoke(1)
        with pytest.raises(errors.LeaseNotFoundError):
            b.lease_revoke(1)
    assert store.revision == 7
    assert [k for k, _ in get(store, b"\x00", b"\x00")] == [b"a"]
    with pytest.raises(errors.LeaseNotFoundError):
        store.lease_ttl_info(1)
    assert store.leases() == [(2, 20)]
    w = store.watch_hub.watch(b"\x00", b"\x00", 7)
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in w.take(10)] == [
        (kv_pb2.Event.DELETE, b"b", 7),
        (kv_pb2.Event.DELETE, b"c", 7),
    ]


# ---- long keys -------------------------------------------------------------------------------
def test_long_keys_and_values(store: Store) -> None:
    """Keys far beyond LMDB's 511 bytes (up to the 1.5 MiB request limit) and values of that
    size work, and keys sharing a long prefix still come back in key order."""
    big = 3 * 512 * 1024
    huge_key = b"k" * big
    put(store, huge_key, b"x" * big)
    prefix = b"p" * 300
    names = [
        prefix + bytes([c]) * n for c, n in [(ord("z"), 1), (ord("a"), 5), (0, 2), (ord("m"), 1)]
    ]
    for n in names:
        put(store, n, n[-3:])
    put(store, prefix, b"short")
    got = [k for k, _ in get(store, prefix, keys.prefix_end(prefix))]
    assert got == sorted(names + [prefix])
    assert get(store, huge_key)[0][1] == b"x" * big
    lo, hi = sorted(names)[1], sorted(names)[3]
    assert [k for k, _ in get(store, lo, hi)] == sorted(names)[1:3]
    with store.write_batch() as b:
        assert b.delete_range(pb.DeleteRangeRequest(key=huge_key)).deleted == 1
    assert get(store, huge_key) == []


# ---- watch -------------------------------------------------------------------------------------
def test_watch_compacted_cancel(store: Store) -> None:
    """A watcher needing history below the compaction revision gets Compacted(rev) and is
    cancelled; one starting at the compaction revision replays from it."""
    for i in range(4):
        put(store, b"k", str(i).encode())  # 2..5
    w_old = store.watch_hub.watch(b"k", b"", 2)
    with store.write_batch() as b:
        b.compact(4)
    assert w_old.take(10) == Compacted(4)
    assert w_old.take(10) == []
    w = store.watch_hub.watch(b"k", b"", 4)
    assert [e.kv.mod_revision for e in w.take(10)] == [4, 5]


def test_slow_watcher_loses_nothing_and_notify(store: Store) -> None:
    """A watcher that never takes while thousands of revisions are written (far beyond the
    shared ring) later receives every event, in order; notify fires only for matching keys;
    take never splits a revision."""
    store.watch_hub.ring_events_max = 50
    calls: list[str] = []
    slow = store.watch_hub.watch(b"k/", keys.prefix_end(b"k/"), 0, notify=lambda: calls.append("k"))
    other = store.watch_hub.watch(b"zzz", b"", 0, notify=lambda: calls.append("z"))
    for i in range(300):
        with store.write_batch(sync=False) as b:
            b.txn(pb.TxnRequest(success=[op_put(b"k/%03d" % i), op_put(b"k/x%03d" % i)]))
    assert calls == ["k"] * 300
    got = []
    while evs := slow.take(7):
        assert not isinstance(evs, Compacted)
        assert len(evs) % 2 == 0  # whole revisions only
        got += [(e.kv.key, e.kv.mod_revision) for e in evs]
    assert got == [(k % i, i + 2) for i in range(300) for k in (b"k/%03d", b"k/x%03d")]
    assert other.take(10) == []


def test_watch_filters_and_prev_kv(store: Store) -> None:
    """NOPUT/NODELETE drop events; prev_kv carries the value before each event."""
    put(store, b"a", b"1")
    put(store, b"a", b"2")
    with store.write_batch() as b:
        b.delete_range(pb.DeleteRangeRequest(key=b"a"))
    nodel = store.watch_hub.watch(
        b"a", b"", 2, prev_kv=True, filters={pb.WatchCreateRequest.NODELETE}
    )
    assert [(e.kv.value, e.prev_kv.value) for e in nodel.take(10)] == [(b"1", b""), (b"2", b"1")]
    noput = store.watch_hub.watch(b"a", b"", 2, prev_kv=True, filters={pb.WatchCreateRequest.NOPUT})
    evs = noput.take(10)
    assert [(e.type, e.prev_kv.value) for e in evs] == [(kv_pb2.Event.DELETE, b"2")]


def test_watch_prev_kv_is_never_given_to_a_creation(store: Store) -> None:
    """etcd 3.4 adds prev_kv only to events that are not creations (a PUT whose create revision
    is its mod revision): a key deleted and put again in one txn gets none, live or replayed."""
    live = store.watch_hub.watch(b"a", b"", 2, prev_kv=True)
    put(store, b"a", b"1")
    with store.write_batch() as b:
        b.txn(pb.TxnRequest(success=[op_del(b"a"), op_put(b"a", b"2")]))
    put(store, b"a", b"3")
    replayed = store.watch_hub.watch(b"a", b"", 2, prev_kv=True)
    for watcher in (live, replayed):
        got = [(e.type, e.kv.mod_revision, e.HasField("prev_kv"), e.prev_kv.value)
               for e in watcher.take(10)]  # fmt: skip
        assert got == [
            (kv_pb2.Event.PUT, 2, False, b""),
            (kv_pb2.Event.DELETE, 3, True, b"1"),
            (kv_pb2.Event.PUT, 3, False, b""),
            (kv_pb2.Event.PUT, 4, True, b"2"),
        ]


# ---- maintenance -------------------------------------------------------------------------------
def test_quota_defragment_and_sizes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """NOSPACE when size + cost reaches the quota; compaction + defragment give the space back
    and keep the data."""
    s = Store.open(str(tmp_path / "db"), quota_bytes=2 << 20)
    big = pb.PutRequest(key=b"big", value=b"x" * 100_000)
    with pytest.raises(errors.NoSpaceError):
        for _ in range(100):
            s.check_quota(big)
            with s.write_batch() as b:
                b.put(big)
    assert s.size_bytes() + 256 + big.ByteSize() >= 2 << 20
    with s.write_batch() as b:
        b.compact(s.revision)
    before = s.size_bytes()
    s.defragment()
    assert s.size_bytes() < before / 4
    assert s.size_in_use_bytes() <= s.size_bytes()
    assert get(s, b"big")[0][1] == b"x" * 100_000
    s.check_quota(big)
    s.close()
    assert Store.open(str(tmp_path / "db")).revision > 2


def test_open_is_constant_time_and_persistent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Reopening reads counters only: revision, consistent index and compaction survive."""
    s = Store.open(str(tmp_path / "db"))
    with s.write_batch() as b:
        for i in range(100):
            b.put(pb.PutRequest(key=b"%d" % i))
        b.set_consistent_index(42)
        b.compact(50)
    s.close()
    s = Store.open(str(tmp_path / "db"))
    assert (s.revision, s.consistent_index, s.compact_revision) == (101, 42, 50)
    assert s.range(pb.RangeRequest(key=b"\x00", range_end=b"\x00", count_only=True)).count == 100
    s.close()


def test_hash_kv_is_deterministic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two stores given the same operations hash equal at every revision, before and after a
    reopen; a different value changes the hash; compacted/future revisions fail."""

    def build(path: str, last: bytes) -> Store:
        s = Store.open(path)
        for v in [b"1", b"2", last]:
            put(s, b"k", v)
        with s.write_batch() as b:
            b.delete_range(pb.DeleteRangeRequest(key=b"k"))
        return s

    a, b2, c = (
        build(str(tmp_path / "a"), b"3"),
        build(str(tmp_path / "b"), b"3"),
        build(str(tmp_path / "c"), b"X"),
    )
    for rev in range(1, 6):
        assert a.hash_kv(rev) == b2.hash_kv(rev)
    assert a.hash_kv(4)[0] != c.hash_kv(4)[0]
    assert a.hash_kv(0) == (a.hash_kv(5)[0], -1, 5)
    with a.write_batch() as w:
        w.compact(3)
    with pytest.raises(errors.CompactedError):
        a.hash_kv(3)
    with pytest.raises(errors.FutureRevisionError):
        a.hash_kv(6)
    h = a.hash_kv(5)
    a.close()
    a = Store.open(str(tmp_path / "a"))
    assert a.hash_kv(5) == h and h[1] == 3


def test_watcher_registered_mid_batch_is_notified(store: Store) -> None:
    """A watcher created while a batch that collected no events runs is still woken, and
    replays the batch's events from LMDB."""
    calls: list[int] = []
    with store.write_batch() as b:
        b.put(pb.PutRequest(key=b"a", value=b"1"))
        w = store.watch_hub.watch(b"a", b"", 0, notify=lambda: calls.append(1))
    assert calls == [1]
    assert [e.kv.value for e in w.take(10)] == [b"1"]


def test_filtered_take_never_returns_empty_while_events_remain(store: Store) -> None:
    """Regression (found by the state machine): with NOPUT, a take over a stretch of puts must
    not come back [] (which means "nothing new") while a delete follows."""
    for i in range(10):
        put(store, b"k%d" % i)
    with store.write_batch() as b:
        b.delete_range(pb.DeleteRangeRequest(key=b"k0"))
    for ring in (0, 1000):  # behind the ring (LMDB replay) and inside it
        store.watch_hub.ring_events_max = ring
        w = store.watch_hub.watch(b"k", b"l", 2, filters={pb.WatchCreateRequest.NOPUT})
        evs = w.take(3)
        assert [(e.type, e.kv.key) for e in evs] == [(kv_pb2.Event.DELETE, b"k0")]


def test_new_watcher_below_compaction_is_cancelled_even_if_in_memory(store: Store) -> None:
    """Regression (found by the state machine): the ring still holding the events does not
    exempt a new watcher from etcd's compacted cancel."""
    live = store.watch_hub.watch(b"a", b"", 0)
    for _ in range(5):
        put(store, b"a")
    with store.write_batch() as b:
        b.compact(4)
    w = store.watch_hub.watch(b"a", b"", 3)
    assert w.take(10) == Compacted(4)
    assert [e.kv.mod_revision for e in live.take(10)] == [2, 3, 4, 5, 6]


def test_watch_from_a_future_revision(store: Store) -> None:
    """A watcher may start beyond the current revision: it stays silent until the store gets
    there, then sees exactly the events from its start on."""
    w = store.watch_hub.watch(b"a", b"", 4)
    w_range = store.watch_hub.watch(b"a", b"b", 4)
    store.watch_hub.ring_events_max = 0  # force the LMDB replay path
    for i in range(5):
        put(store, b"a", b"%d" % i)  # revisions 2..6
        if i == 0:
            assert w.take(10) == [] and w_range.take(10) == []
    assert [e.kv.mod_revision for e in w.take(10)] == [4, 5, 6]
    assert [e.kv.mod_revision for e in w_range.take(10)] == [4, 5, 6]


def test_compact_zero_on_a_new_store(store: Store) -> None:
    """etcd's compaction revision starts at -1: compact(0) succeeds once (HashKV then reports
    compact_revision 0 instead of -1), a second compact(0) is 'compacted'."""
    put(store, b"a")
    assert store.hash_kv(0)[1] == -1
    with store.write_batch() as b:
        b.compact(0)
    assert store.hash_kv(0)[1] == 0 and store.compact_revision == 0
    with store.write_batch() as b, pytest.raises(errors.CompactedError):
        b.compact(0)
    with store.write_batch() as b:
        b.compact(1)
    assert store.hash_kv(0)[1] == 1
