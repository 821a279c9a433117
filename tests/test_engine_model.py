"""Model-based test: a Hypothesis state machine drives the engine and a naive reference model
(tests/engine_model.py, one dict per revision) with the same operations, and compares every
response, every historical read (with every RangeRequest option), watch replays and live
watchers, across compaction (in small resumable steps), lease revokes and reopening the store.

Hypothesis runs derandomized (a fixed seed): a failure replays identically and Hypothesis prints
the minimal failing program. The last test plants an off-by-one in the engine and checks that
this machine catches it.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from api.etcdserverpb import rpc_pb2 as pb
from engine import Compacted, Store, compaction, errors, keys, reader, validate
from tests.engine_model import KV, Model, in_range, kv_tuple

# Long keys make Hypothesis warn about the size of its repr of a step; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

LONG = b"L" * 200
KEYS = [b"a", b"ab", b"b", b"\x00", b"\x00a", b"c\xff", b"\xff", LONG, LONG + b"1", LONG + b"2"]
KEYS += [LONG + b"\x00", b"L" * 199]
ENDS = [b"", b"", b"\x00", b"b", b"c", LONG + b"1", b"\xff\xff", b"a"]
VALUES = [b"", b"v1", b"v2", b"x" * 40]

keys_st = st.sampled_from(KEYS)
ends_st = st.sampled_from(ENDS)


def put_st() -> st.SearchStrategy[pb.PutRequest]:
    return st.builds(
        lambda k, v, lease, prev, iv, il: pb.PutRequest(
            key=k,
            value=b"" if iv else v,
            lease=0 if il else lease,
            prev_kv=prev,
            ignore_value=iv,
            ignore_lease=il,
        ),
        keys_st,
        st.sampled_from(VALUES),
        st.sampled_from([0, 0, 1, 2, 9]),
        st.booleans(),
        st.booleans().map(lambda b: b and False) | st.just(False) | st.booleans(),
        st.booleans(),
    )


compare_st = st.builds(
    lambda k, end, target, result, n, v: pb.Compare(
        key=k,
        range_end=end,
        target=target,
        result=result,
        **{
            pb.Compare.VERSION: {"version": n},
            pb.Compare.CREATE: {"create_revision": n},
            pb.Compare.MOD: {"mod_revision": n},
            pb.Compare.VALUE: {"value": v},
            pb.Compare.LEASE: {"lease": n % 3},
        }[target],
    ),
    keys_st,
    st.sampled_from([b"", b"", b"", b"\x00", b"c"]),
    st.sampled_from([0, 1, 2, 3, 4]),
    st.sampled_from([0, 1, 2, 3]),
    st.integers(0, 6),
    st.sampled_from(VALUES),
)


def op_st(depth: int) -> st.SearchStrategy[pb.RequestOp]:
    ops = [
        put_st().map(lambda p: pb.RequestOp(request_put=p)),
        st.builds(
            lambda k, e, prev: pb.RequestOp(
                request_delete_range=pb.DeleteRangeRequest(key=k, range_end=e, prev_kv=prev)
            ),
            keys_st,
            ends_st,
            st.booleans(),
        ),
        st.builds(
            lambda k, e: pb.RequestOp(request_range=pb.RangeRequest(key=k, range_end=e)),
            keys_st,
            ends_st,
        ),
    ]
    if depth > 0:
        ops.append(txn_st(depth - 1).map(lambda t: pb.RequestOp(request_txn=t)))
    return st.one_of(*ops)


def txn_st(depth: int = 1) -> st.SearchStrategy[pb.TxnRequest]:
    return st.builds(
        lambda c, s, f: pb.TxnRequest(compare=c, success=s, failure=f),
        st.lists(compare_st, max_size=2),
        st.lists(op_st(depth), max_size=3),
        st.lists(op_st(depth), max_size=2),
    )


range_st = st.builds(
    lambda k, e, lim, so, stg, ko, co, mn, mx, cmn, cmx: pb.RangeRequest(
        key=k,
        range_end=e,
        limit=lim,
        sort_order=so,
        sort_target=stg,
        keys_only=ko,
        count_only=co,
        min_mod_revision=mn,
        max_mod_revision=mx,
        min_create_revision=cmn,
        max_create_revision=cmx,
    ),
    keys_st,
    ends_st,
    st.sampled_from([0, 0, 1, 2, 5]),
    st.sampled_from([0, 0, 1, 2]),
    st.sampled_from([0, 0, 1, 2, 3, 4]),
    st.booleans(),
    st.sampled_from([False, False, True]),
    st.sampled_from([0, 0, 3]),
    st.sampled_from([0, 0, 6]),
    st.sampled_from([0, 0, 2]),
    st.sampled_from([0, 0, 8]),
)


def _err(fn):  # type: ignore[no-untyped-def]
    try:
        return fn(), None
    except errors.EngineError as e:
        return None, type(e)


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="petra-engine-")
        self.store = Store.open(self.dir, map_size_bytes=1 << 28)
        self.store.watch_hub.ring_events_max = 6  # small: exercise falling behind the ring
        self.model = Model()
        self.ci = 0
        self.compacted_ever = False  # etcd: compact(0) succeeds once on a new store
        self.live: list[tuple[object, int, bytes, bytes]] = []  # watcher, next rev, key, end

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- writes ---------------------------------------------------------------------------
    def _batch(self, fn):  # type: ignore[no-untyped-def]
        self.ci += 1
        with self.store.write_batch(sync=False) as b:
            out = _err(lambda: fn(b))
            b.set_consistent_index(self.ci)
        return out

    @rule(req=put_st())
    def put(self, req: pb.PutRequest) -> None:
        m = self.model
        state, evs = m.begin()
        exp_err = None
        old = None
        try:
            validate.check_put(req)
            m.check_put(state, req)
            old = m.put(state, evs, req, m.rev + 1)
        except errors.EngineError as e:
            exp_err = type(e)
        resp, err = self._batch(lambda b: b.put(req))
        assert err == exp_err
        if err is None:
            m.commit(state, evs)
            assert resp.header.revision == m.rev
            if req.prev_kv and old is not None:
                assert kv_tuple(resp.prev_kv) == kv_tuple(old)
            else:
                assert not resp.HasField("prev_kv")

    @rule(key=keys_st, end=ends_st, prev=st.booleans())
    def delete(self, key: bytes, end: bytes, prev: bool) -> None:
        m = self.model
        state, evs = m.begin()
        doomed = m.delete(state, evs, key, end, m.rev + 1)
        req = pb.DeleteRangeRequest(key=key, range_end=end, prev_kv=prev)
        resp, err = self._batch(lambda b: b.delete_range(req))
        assert err is None
        m.commit(state, evs)
        assert resp.deleted == len(doomed)
        assert resp.header.revision == m.rev
        assert [kv_tuple(k) for k in resp.prev_kvs] == (
            [kv_tuple(k) for k in doomed] if prev else []
        )

    @rule(req=txn_st())
    def txn(self, req: pb.TxnRequest) -> None:
        try:
            validate.check_txn(req, 128)
        except errors.EngineError:
            return  # the server rejects it before it reaches the engine
        m = self.model
        pre = m.states[-1]
        state, evs = m.begin()
        exp_err = None
        expected = None
        try:
            path = self._path(pre, req)
            self._check_path(pre, req, list(path))
            expected = self._exec(state, evs, req, iter(path), m.rev + 1)
        except errors.EngineError as e:
            exp_err = type(e)
        resp, err = self._batch(lambda b: b.txn(req))
        assert err == exp_err
        if err is None:
            m.commit(state, evs)
            assert resp.header.revision == m.rev
            assert self._resp_tuple(resp) == expected

    def _path(self, pre: dict, req: pb.TxnRequest) -> list[bool]:
        ok = all(self.model.compare(pre, c) for c in req.compare)
        out = [ok]
        for op in req.success if ok else req.failure:
            if op.WhichOneof("request") == "request_txn":
                out += self._path(pre, op.request_txn)
        return out

    def _check_path(self, pre: dict, req: pb.TxnRequest, path: list[bool]) -> None:
        for op in req.success if path.pop(0) else req.failure:
            w = op.WhichOneof("request")
            if w == "request_put":
                self.model.check_put(pre, op.request_put, in_txn=True)
            elif w == "request_txn":
                self._check_path(pre, op.request_txn, path)

    def _exec(self, state: dict, evs: list, req: pb.TxnRequest, path, rev: int) -> tuple:  # type: ignore[no-untyped-def]
        ok = next(path)
        out = []
        for op in req.success if ok else req.failure:
            w = op.WhichOneof("request")
            if w == "request_put":
                old = self.model.put(state, evs, op.request_put, rev)
                show = op.request_put.prev_kv and old is not None
                out.append(("put", kv_tuple(old) if show else None))
            elif w == "request_delete_range":
                d = op.request_delete_range
                doomed = self.model.delete(state, evs, d.key, d.range_end, rev)
                out.append(("del", len(doomed), [kv_tuple(k) for k in doomed] if d.prev_kv else []))
            elif w == "request_range":
                count, kvs, more = self.model.range(op.request_range, state)
                out.append(("range", count, [kv_tuple(k) for k in kvs], more))
            else:
                out.append(("txn", self._exec(state, evs, op.request_txn, path, rev)))
        return (ok, out)

    def _resp_tuple(self, resp: pb.TxnResponse) -> tuple:
        out: list = []
        for r in resp.responses:
            w = r.WhichOneof("response")
            if w == "response_put":
                p = r.response_put
                out.append(("put", kv_tuple(p.prev_kv) if p.HasField("prev_kv") else None))
            elif w == "response_delete_range":
                d = r.response_delete_range
                out.append(("del", d.deleted, [kv_tuple(k) for k in d.prev_kvs]))
            elif w == "response_range":
                g = r.response_range
                out.append(("range", g.count, [kv_tuple(k) for k in g.kvs], g.more))
            else:
                out.append(("txn", self._resp_tuple(r.response_txn)))
        return (resp.succeeded, out)

    @rule(reqs=st.lists(put_st(), min_size=2, max_size=4))
    def batch_of_puts(self, reqs: list[pb.PutRequest]) -> None:
        """Several ops in one batch; a failing op changes nothing and the batch goes on."""
        m = self.model
        results = []
        self.ci += 1
        with self.store.write_batch(sync=False) as b:
            for req in reqs:
                results.append(_err(lambda req=req: b.put(req)))
            b.set_consistent_index(self.ci)
        for req, (resp, err) in zip(reqs, results, strict=True):
            state, evs = m.begin()
            exp_err = None
            try:
                validate.check_put(req)
                m.check_put(state, req)
                m.put(state, evs, req, m.rev + 1)
            except errors.EngineError as e:
                exp_err = type(e)
            assert err == exp_err
            if err is None:
                m.commit(state, evs)
                assert resp.header.revision == m.rev

    @rule(lease=st.integers(1, 3), ttl=st.integers(1, 100))
    def lease_grant(self, lease: int, ttl: int) -> None:
        _, err = self._batch(lambda b: b.lease_grant(lease, ttl))
        if lease in self.model.leases:
            assert err is errors.LeaseExistsError
        else:
            assert err is None
            self.model.leases[lease] = ttl
        assert dict(self.store.leases()) == self.model.leases

    @rule(lease=st.integers(1, 4))
    def lease_revoke(self, lease: int) -> None:
        m = self.model
        attached = sorted(k for k, kv in m.states[-1].items() if kv.lease == lease)
        if lease in m.leases:
            ttl, ks = self.store.lease_ttl_info(lease)
            assert (ttl, ks) == (m.leases[lease], attached)
        _, err = self._batch(lambda b: b.lease_revoke(lease))
        if lease not in m.leases:
            assert err is errors.LeaseNotFoundError
            return
        assert err is None
        del m.leases[lease]
        state, evs = m.begin()
        for k in attached:
            m.delete(state, evs, k, b"", m.rev + 1)
        m.commit(state, evs)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        m = self.model
        rev = data.draw(st.integers(max(0, m.compacted - 1), m.rev + 1))
        _, err = self._batch(lambda b: b.compact(rev))
        if rev <= (m.compacted if self.compacted_ever else -1):
            assert err is errors.CompactedError
        elif rev > m.rev:
            assert err is errors.FutureRevisionError
        else:
            assert err is None
            m.compacted = rev
            self.compacted_ever = True
            for w, nxt, _, _ in self.live:
                if nxt <= rev:
                    w.cancel()  # type: ignore[attr-defined]
            self.live = [x for x in self.live if x[1] > rev]

    @precondition(lambda self: self.model.compacted > 0)
    @rule()
    def compaction_step(self) -> None:
        self.store.compaction_step()

    @precondition(lambda self: self.model.compacted > 0)
    @rule()
    def compacted_storage_is_etcds_keep_set(self) -> None:
        """Once a compaction has finished, the history at or below C is exactly etcd's keep
        set (the newest revision of each key alive at C) plus the tombstones at C itself."""
        if self.store.compaction_pending():
            return
        c = self.model.compacted
        keep = sorted(
            [(kv.mod, kv.key) for kv in self.model.states[c].values()]
            + [(c, kv.key) for typ, kv in self.model.events[c] if typ == "DELETE"]
        )
        store = self.store
        with store.env.begin() as txn:
            got = []
            for k, v in txn.cursor(db=store.dbs.log):
                main, _, tomb = keys.parse_rev_key(bytes(k))
                if main > c:
                    break
                assert not tomb or main == c
                klen = keys.LOG_VALUE.unpack_from(v)[3]
                got.append((main, bytes(v[keys.LOG_VALUE.size : keys.LOG_VALUE.size + klen])))
            idx_old = sum(
                1 for k, _ in txn.cursor(db=store.dbs.idx) if keys.uninv(bytes(k)[-8:]) <= c
            )
        assert sorted(got) == keep
        assert idx_old == len(keep)

    @rule()
    def defragment(self) -> None:
        self.store.defragment()

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = Store.open(self.dir, map_size_bytes=1 << 28)
        self.store.watch_hub.ring_events_max = 6
        self.live = []
        assert self.store.consistent_index == self.ci

    # ---- reads ----------------------------------------------------------------------------
    @rule(req=range_st, data=st.data())
    def range(self, req: pb.RangeRequest, data: st.DataObject) -> None:
        req.revision = data.draw(st.integers(0, self.model.rev + 1))
        exp, exp_err = _err(lambda: self.model.range(req))
        resp, err = _err(lambda: self.store.range(req))
        assert err == exp_err, (err, exp_err)
        if err is None:
            count, kvs, more = exp
            assert resp.header.revision == self.model.rev
            assert resp.count == count
            assert [kv_tuple(k) for k in resp.kvs] == [kv_tuple(k) for k in kvs]
            assert resp.more == more

    def _expected_events(self, start: int, key: bytes, end: bytes, prev: bool, filters) -> list:  # type: ignore[no-untyped-def]
        m = self.model
        out = []
        for r in range(start, m.rev + 1):
            for typ, kv in m.events[r]:
                if not in_range(kv.key, key, end):
                    continue
                if (typ == "PUT" and 0 in filters) or (typ == "DELETE" and 1 in filters):
                    continue
                p = None
                if prev and r - 1 >= m.compacted:
                    old = m.states[r - 1].get(kv.key)
                    p = kv_tuple(old) if old else None
                out.append((typ, kv_tuple(kv), p))
        return out

    def _drain(self, w, max_events: int) -> list | Compacted:  # type: ignore[no-untyped-def]
        got: list = []
        last_rev = 0
        for _ in range(10_000):
            evs = w.take(max_events)
            if isinstance(evs, Compacted):
                assert not got
                return evs
            if not evs:
                return got
            assert evs[0].kv.mod_revision > last_rev, "a revision was split across takes"
            last_rev = evs[-1].kv.mod_revision
            for e in evs:
                typ = "PUT" if e.type == 0 else "DELETE"
                kv = e.kv
                t = (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                p = kv_tuple(e.prev_kv) if e.HasField("prev_kv") else None
                got.append((typ, t, p))
        raise AssertionError("watcher never ran dry")

    @rule(data=st.data(), key=keys_st, end=ends_st, prev=st.booleans())
    def watch_replay(self, data: st.DataObject, key: bytes, end: bytes, prev: bool) -> None:
        m = self.model
        start = data.draw(st.integers(max(1, m.compacted - 1), m.rev + 1))
        if start == m.compacted and self.store.compaction_pending():
            return  # mid-compaction, the compaction revision itself is being rewritten
        filters = data.draw(st.sampled_from([frozenset(), frozenset({0}), frozenset({1})]))
        w = self.store.watch_hub.watch(key, end, start, prev_kv=prev, filters=filters)
        got = self._drain(w, data.draw(st.integers(1, 5)))
        if start < m.compacted:
            assert got == Compacted(m.compacted)
            return
        expected = self._expected_events(start, key, end, prev, filters)
        assert got == expected, (start, m.compacted, got, expected)
        w.cancel()

    @rule(key=keys_st, end=ends_st)
    def watch_live(self, key: bytes, end: bytes) -> None:
        w = self.store.watch_hub.watch(key, end, 0, prev_kv=True)
        self.live.append((w, self.model.rev + 1, key, end))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def check_live(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.live) - 1))
        w, nxt, key, end = self.live[i]
        got = self._drain(w, 3)
        assert got == self._expected_events(nxt, key, end, True, frozenset())
        self.live[i] = (w, self.model.rev + 1, key, end)

    @invariant()
    def revision_matches(self) -> None:
        assert self.store.revision == self.model.rev
        assert self.store.compact_revision == self.model.compacted


def _run(max_examples: int, steps: int, shrink: bool = True) -> None:
    phases = list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate]
    EngineMachine.TestCase.settings = settings(
        phases=phases,
        max_examples=max_examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    EngineMachine.TestCase().runTest()


def test_engine_matches_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine and model agree on every response over random programs (small compaction steps
    so compaction is often in progress)."""
    monkeypatch.setattr(compaction, "BATCH_RECORDS_MAX", 3)
    _run(max_examples=60, steps=50)


@pytest.mark.slow
def test_engine_matches_model_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compaction, "BATCH_RECORDS_MAX", 3)
    _run(max_examples=500, steps=80)


def test_state_machine_finds_planted_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine is not blind: reading a revision equal to the compaction revision wrongly
    fails (an off-by-one in the compacted check) and the machine must notice."""
    original = reader.check_revision

    def off_by_one(rev: int, current: int, compacted: int) -> int:
        if 0 < rev <= compacted:
            raise errors.CompactedError(compacted)
        return original(rev, current, compacted)

    monkeypatch.setattr(reader, "check_revision", off_by_one)
    with pytest.raises(AssertionError):
        _run(max_examples=300, steps=60, shrink=False)


def test_kv_helper_is_consistent() -> None:
    kv = KV(b"k", b"v", 2, 3, 1, 0)
    assert kv_tuple(kv) == (b"k", b"v", 2, 3, 1, 0)
