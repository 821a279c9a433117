"""The watch hub: pull-based watchers over the revision log.

A watcher is a key range and the next revision it needs. The writer never pushes events into
per-watcher queues: after each commit it appends the batch's events to one shared, bounded ring
of recent revisions and calls `notify()` on the watchers the batch concerns. `take()` serves a
watcher from the ring when its next revision is still there, and otherwise replays from LMDB. So
a slow watcher costs the writer nothing, holds no buffer of its own, and loses no event: when it
falls behind the ring it simply reads history, and if that history was compacted it gets
`Compacted` (as etcd cancels with compact_revision).

Threads: publish() runs on the writer thread; take()/cancel() on any thread. The ring and the
watcher set are guarded by one lock, never held while calling back or reading LMDB.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from api.etcdserverpb import rpc_pb2
from api.mvccpb import kv_pb2
from engine import keys, reader

if TYPE_CHECKING:
    from engine.batch import RawEvent
    from engine.store import Store

NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
NODELETE = rpc_pb2.WatchCreateRequest.NODELETE
RING_EVENTS_MAX = 20_000
RING_BYTES_MAX = 64 << 20  # keys + values held in the ring


class Compacted(NamedTuple):
    compact_revision: int


class Watcher:
    def __init__(
        self,
        hub: WatchHub,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        prev_kv: bool,
        filters: frozenset[int],
        notify: Callable[[], None] | None,
    ) -> None:
        self.hub = hub
        self.key = key
        # range_end: b'' one key; b'\0' every key >= key; else [key, range_end).
        self.range_end = range_end
        self.next_revision = start_revision  # Invariant: every event below it was taken
        self.prev_kv = prev_kv
        self.filters = filters
        self.notify = notify
        self.canceled = False
        # Needs history and take() not called yet: etcd's "unsynced" watcher, which compaction
        # cancels (a watcher that starts in the future is "synced" and never is).
        self._fresh = start_revision <= hub.store.revision

    def matches(self, k: bytes) -> bool:
        end = self.range_end
        if not end:
            return k == self.key
        return k >= self.key and (end == b"\x00" or k < end)

    def wants(self, tomb: bool) -> bool:
        """False if a NOPUT/NODELETE filter drops this kind of event. Filters apply while
        collecting, so a take() that returns [] really had nothing left."""
        return (NODELETE if tomb else NOPUT) not in self.filters

    def take(self, max_events: int = 1000) -> list[kv_pb2.Event] | Compacted:
        """The next events, whole revisions only (at least one revision even if it alone has more
        than max_events); [] when nothing new."""
        if self.canceled:
            return []
        max_events = max(1, max_events)
        if self._fresh:
            # etcd cancels an unsynced watcher whose start is below the compaction revision,
            # even if the events happen to be still in memory (here: in the ring).
            self._fresh = False
            compacted = self.hub.store.compact_revision
            if self.next_revision < compacted:
                self.cancel()
                return Compacted(compacted)
        raws = self.hub._from_ring(self, max_events)
        if raws is None:
            return self._replay(max_events)
        return self._events(raws)

    def cancel(self) -> None:
        self.canceled = True
        self.hub._remove(self)

    def _replay(self, max_events: int) -> list[kv_pb2.Event] | Compacted:
        store = self.hub.store
        with store.env.begin() as txn:
            current = store._meta_int(txn, b"rev", 1)
            compacted = store._meta_int(txn, b"compact_rev", 0)
            if self.next_revision < compacted:
                self.cancel()
                return Compacted(compacted)
            if not self.range_end:
                return self._build(txn, self._replay_key(txn, current, max_events), compacted)
            out: list[RawEvent] = []
            cur = txn.cursor(db=store.dbs.log)
            ok = cur.set_range(keys.rev_key(self.next_revision, 0))
            last = self.next_revision - 1
            unpack = keys.LOG_VALUE.unpack_from
            size = keys.LOG_VALUE.size
            while ok:
                k = cur.key()
                main, sub, tomb = keys.parse_rev_key(k)
                if main > current or (main != last and len(out) >= max_events):
                    break
                last = main
                v = cur.value()
                create, version, lease, klen = unpack(v)
                key = bytes(v[size : size + klen])
                if self.matches(key) and self.wants(tomb):
                    value = b"" if tomb else bytes(v[size + klen :])
                    out.append((main, sub, tomb, key, create, version, lease, value))
                ok = cur.next()
            # never backwards: a watcher may start beyond the current revision
            self.next_revision = (last + 1) if ok else max(self.next_revision, current + 1)
            return self._build(txn, out, compacted)

    def _replay_key(self, txn: Any, current: int, max_events: int) -> list[RawEvent]:
        """Replay of a single-key watcher: walk the key's own history in the index instead of
        the whole log (one event per revision at most, so max_events is exact)."""
        dbs = self.hub.store.dbs
        ik = keys.ikey(self.key)
        cur = txn.cursor(db=dbs.idx)
        found: list[tuple[int, int, bool]] = []
        ok = cur.set_range(ik + keys.inv(current))
        while ok:
            comp = cur.key()
            if comp[:-8] != ik:
                break
            main = keys.uninv(comp[-8:])
            if main < self.next_revision:
                break
            sub, _, version, _ = keys.IDX_VALUE.unpack_from(cur.value())
            if self.wants(version == 0):
                found.append((main, sub, version == 0))
            ok = cur.next()
        found.reverse()
        del found[max_events:]
        if len(found) == max_events:
            self.next_revision = found[-1][0] + 1
        else:
            self.next_revision = max(self.next_revision, current + 1)
        out: list[RawEvent] = []
        size = keys.LOG_VALUE.size
        for main, sub, tomb in found:
            v = txn.get(keys.rev_key(main, sub, tomb), db=dbs.log)
            create, version, lease, klen = keys.LOG_VALUE.unpack_from(v)
            value = b"" if tomb else bytes(v[size + klen :])
            out.append((main, sub, tomb, self.key, create, version, lease, value))
        return out

    def _events(self, raws: list[RawEvent]) -> list[kv_pb2.Event]:
        if not raws:
            return []
        store = self.hub.store
        with store.env.begin() as txn:
            return self._build(txn, raws, store._meta_int(txn, b"compact_rev", 0))

    def _build(self, txn: object, raws: list[RawEvent], compacted: int) -> list[kv_pb2.Event]:
        events = []
        dbs = self.hub.store.dbs
        for main, _sub, tomb, key, create, version, lease, value in raws:
            ev = kv_pb2.Event(type=kv_pb2.Event.DELETE if tomb else kv_pb2.Event.PUT)
            kv = ev.kv
            kv.key = key
            kv.mod_revision = main
            if not tomb:
                kv.create_revision = create
                kv.version = version
                kv.value = value
                kv.lease = lease
            # etcd 3.4 looks up no prev_kv for a creation (a put whose create revision is its
            # own), not even for a key a txn deleted and then put again.
            if self.prev_kv and main - 1 >= compacted and (tomb or create != main):
                e = reader.get_one(txn, dbs, key, main - 1)
                if e is not None:
                    ev.prev_kv.CopyFrom(reader.to_kv(txn, dbs, e))
            events.append(ev)
        return events


class WatchHub:
    def __init__(self, store: Store, ring_events_max: int = RING_EVENTS_MAX) -> None:
        self.store = store
        self.ring_events_max = ring_events_max
        self._lock = threading.Lock()
        self._watchers: set[Watcher] = set()
        # Invariant: the ring holds every event of revisions [ring_first, ring_first+len) in order.
        self._ring: deque[tuple[int, list[RawEvent]]] = deque()
        self._ring_first = store.revision + 1
        self._ring_events = 0
        self._ring_bytes = 0

    def active(self) -> bool:
        return bool(self._watchers)

    def watch(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        *,
        prev_kv: bool = False,
        filters: Iterable[int] = frozenset(),
        notify: Callable[[], None] | None = None,
    ) -> Watcher:
        """start_revision 0 means from the next revision on."""
        with self._lock:
            start = start_revision if start_revision > 0 else self.store.revision + 1
            w = Watcher(self, key, range_end, start, prev_kv, frozenset(filters), notify)
            self._watchers.add(w)
        return w

    def _remove(self, w: Watcher) -> None:
        with self._lock:
            self._watchers.discard(w)

    def publish(self, events: list[RawEvent] | None, revision: int) -> None:
        """After a commit up to `revision`: extend the ring and wake the concerned watchers.
        events None: the batch did not collect events (nobody watched when it began)."""
        with self._lock:
            if events is None:  # the ring restarts after this batch
                self._ring.clear()
                self._ring_events = 0
                self._ring_bytes = 0
                self._ring_first = revision + 1
            else:
                self._append(events)
            watchers = list(self._watchers)
        if events is None:
            # A watcher registered while the batch ran: it replays from LMDB; wake it.
            for w in watchers:
                if w.notify is not None and w.next_revision <= revision:
                    w.notify()
            return
        # The set of changed keys is built only if someone is to be told.
        targets = [(w, w.notify) for w in watchers if w.notify is not None]
        if not events or not targets:
            return
        changed = {e[3] for e in events}
        for w, notify in targets:
            if w.key in changed if not w.range_end else any(w.matches(k) for k in changed):
                notify()

    def _append(self, events: list[RawEvent]) -> None:
        i = 0
        while i < len(events):
            main = events[i][0]
            # Events come in revision order; one revision may hold a big delete's 100k+ events.
            j = bisect.bisect_right(events, main, lo=i, key=_main_of)
            if not self._ring:
                self._ring_first = main
            evs = events[i:j]
            self._ring.append((main, evs))
            self._ring_events += j - i
            self._ring_bytes += _bytes(evs)
            i = j
        while len(self._ring) > 1 and (
            self._ring_events > self.ring_events_max or self._ring_bytes > RING_BYTES_MAX
        ):
            _, evs = self._ring.popleft()
            self._ring_events -= len(evs)
            self._ring_bytes -= _bytes(evs)
            self._ring_first = self._ring[0][0]

    def _from_ring(self, w: Watcher, max_events: int) -> list[RawEvent] | None:
        """Events for w from the ring, or None if w is behind it (then it replays from LMDB)."""
        with self._lock:
            if w.next_revision < self._ring_first:
                return None
            out: list[RawEvent] = []
            if not self._ring:
                return out
            i = w.next_revision - self._ring_first
            while i < len(self._ring) and len(out) < max_events:
                main, evs = self._ring[i]
                out.extend(e for e in evs if w.matches(e[3]) and w.wants(e[2]))
                w.next_revision = main + 1
                i += 1
            return out


def _main_of(e: RawEvent) -> int:
    return e[0]


def _bytes(evs: list[RawEvent]) -> int:
    return sum(len(e[3]) + len(e[7]) for e in evs)
