"""The crash-recovery verdict: a pure function of a recorded History.

Checks, each reported separately (as etcd's robustness tests do):
- durable: every acknowledged write is present at the revision it was acknowledged with,
  by a Range at that revision (point read) and in the audited history;
- atomic: a txn's puts are all at one revision, alone, or none is (acked or not);
- no phantoms: every value in the history was written by someone, and at most once;
- monotonic: a response never shows a lower revision than one that finished before its
  request started; a restart never goes below the highest acknowledged revision;
- final state: the last Range equals the last event of each key in the history;
- watch: a Watch that worked never answers UNIMPLEMENTED later (e.g. while restarting);
  the resuming watcher delivered exactly the audited events from its start revision
  up to its last, each once (unique), none missing (reliable), in revision order (ordered).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from bench.history import Event, History, Observation, Write

EXAMPLES_MAX = 5  # problems of one kind quoted in the verdict; the count is always complete


@dataclass(slots=True)
class Verdict:
    acknowledged: int = 0
    verified: int = 0
    lost: int = 0
    unacked_applied: int = 0
    unacked_absent: int = 0
    watch_events: int = 0
    watch_duplicates: int = 0
    watch_missed: int = 0
    watch_out_of_order: int = 0
    watch_checked: bool = True
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str) -> None:
        self.problems.setdefault(kind, []).append(message)

    def summary(self) -> str:
        lines = [
            f"acknowledged {self.acknowledged}, verified {self.verified}, lost {self.lost}",
            f"unacknowledged: applied {self.unacked_applied}, absent {self.unacked_absent}",
            f"watch: {self.watch_events} events, duplicates {self.watch_duplicates}, "
            f"missed {self.watch_missed}, out of order {self.watch_out_of_order}"
            if self.watch_checked
            else "watch: not checked (the endpoint does not implement Watch)",
        ]
        for kind, msgs in sorted(self.problems.items()):
            lines.append(f"FAIL {kind}: {len(msgs)}")
            lines += [f"    {m}" for m in msgs[:EXAMPLES_MAX]]
        lines.append("VERDICT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def verify(h: History) -> Verdict:
    v = Verdict()
    by_value = _index_by_value(h.audit, v)
    by_revision: dict[int, list[Event]] = defaultdict(list)
    for ev in h.audit:
        by_revision[ev.revision].append(ev)
    _check_writes(h, by_value, by_revision, v)
    _check_phantoms(h, by_value, v)
    _check_monotonic(h.observations, v)
    _check_recoveries(h, v)
    _check_final(h, v)
    _check_watch(h, v)
    return v


def _index_by_value(audit: list[Event], v: Verdict) -> dict[bytes, Event]:
    seen: dict[bytes, Event] = {}
    for ev in audit:
        if ev.value in seen:
            v.add(
                "duplicate-apply",
                f"value {ev.value!r} applied at {seen[ev.value].revision} "
                f"and again at {ev.revision}",
            )
        else:
            seen[ev.value] = ev
    return seen


def _check_writes(
    h: History, by_value: dict[bytes, Event], by_revision: dict[int, list[Event]], v: Verdict
) -> None:
    for w in h.writes:
        found = [by_value.get(val) for _, val in w.puts]
        present = [ev for ev in found if ev is not None]
        if w.acked:
            v.acknowledged += 1
            if _acked_durable(h, w, found, v):
                v.verified += 1
            else:
                v.lost += 1
        elif present:
            v.unacked_applied += 1
        else:
            v.unacked_absent += 1
        if present:
            _check_atomic(w, found, by_revision, v)


def _acked_durable(h: History, w: Write, found: list[Event | None], v: Verdict) -> bool:
    """An acknowledged write is durable when each of its pairs reads back at its revision."""
    ok = True
    for (key, value), ev in zip(w.puts, found, strict=True):
        read = h.point_reads.get((key, w.revision), "unread")
        if read != "unread" and read != (value, w.revision):
            v.add(
                "lost",
                f"op {w.op_id}: {key!r}={value!r} acked at revision {w.revision}, "
                f"a Range at that revision reads {read!r}",
            )
            ok = False
        elif ev is None:
            v.add(
                "lost",
                f"op {w.op_id}: {key!r}={value!r} acked at revision {w.revision}, "
                "absent from the history",
            )
            ok = False
        elif ev.revision != w.revision or ev.key != key:
            v.add(
                "lost",
                f"op {w.op_id}: {key!r}={value!r} acked at revision {w.revision}, "
                f"found as {ev.key!r} at revision {ev.revision}",
            )
            ok = False
    return ok


def _check_atomic(
    w: Write, found: list[Event | None], by_revision: dict[int, list[Event]], v: Verdict
) -> None:
    """All pairs of a write at one revision, which holds nothing else; or none of them."""
    if any(ev is None for ev in found):
        v.add(
            "not-atomic",
            f"op {w.op_id}: {sum(ev is not None for ev in found)} of {len(found)} puts applied",
        )
        return
    revisions = {ev.revision for ev in found if ev is not None}
    if len(revisions) != 1:
        v.add("not-atomic", f"op {w.op_id}: puts applied at revisions {sorted(revisions)}")
        return
    rev = revisions.pop()
    if len(by_revision[rev]) != len(w.puts):
        v.add(
            "not-atomic",
            f"op {w.op_id}: revision {rev} holds {len(by_revision[rev])} "
            f"events, the write has {len(w.puts)}",
        )


def _check_phantoms(h: History, by_value: dict[bytes, Event], v: Verdict) -> None:
    written = {val for w in h.writes for _, val in w.puts}
    for value, ev in by_value.items():
        if ev.type == 0 and value not in written:
            v.add("phantom", f"revision {ev.revision}: {ev.key!r}={value!r} was never written")


def _check_monotonic(observations: list[Observation], v: Verdict) -> None:
    """Real-time order: if a finished before b started, b.revision >= a.revision."""
    by_end = sorted(observations, key=lambda o: o.end_s)
    by_start = sorted(observations, key=lambda o: o.start_s)
    best: Observation | None = None
    i = 0
    for b in by_start:
        while i < len(by_end) and by_end[i].end_s < b.start_s:
            if best is None or by_end[i].revision > best.revision:
                best = by_end[i]
            i += 1
        if best is not None and b.revision < best.revision:
            v.add(
                "revision-went-back",
                f"a response at t={best.end_s:.3f}s had revision "
                f"{best.revision}; a later request (t={b.start_s:.3f}s) saw {b.revision}",
            )


def _check_recoveries(h: History, v: Verdict) -> None:
    for r in h.recoveries:
        if r.revision_after < r.max_acked_revision:
            v.add(
                "revision-went-back",
                f"cycle {r.cycle}: revision {r.revision_after} after "
                f"restart, {r.max_acked_revision} was acknowledged before the kill",
            )


def _check_final(h: History, v: Verdict) -> None:
    last: dict[bytes, Event] = {}
    for ev in h.audit:
        last[ev.key] = ev
    expect = {k: (ev.value, ev.revision) for k, ev in last.items() if ev.type == 0}
    if h.final != expect:
        diff = sorted(set(h.final.items()) ^ set(expect.items()))
        v.add(
            "final-state",
            f"the last Range differs from the history on {len(diff)} entries, e.g. {diff[:2]!r}",
        )


def _check_watch(h: History, v: Verdict) -> None:
    if not h.watch_supported:
        v.watch_checked = False
        return
    if h.watch_errors.get("UNIMPLEMENTED"):
        v.add(
            "watch-unimplemented",
            f"Watch answered UNIMPLEMENTED {h.watch_errors['UNIMPLEMENTED']}"
            " times after it had worked (a client treats that as fatal, not as retryable)",
        )
    got = h.watched
    v.watch_events = len(got)
    last = max((ev.revision for ev in got), default=0)
    if h.audit and last < h.audit[-1].revision:
        v.add(
            "watch-stalled",
            f"the watcher's last event is at revision {last}, the history "
            f"goes on to {h.audit[-1].revision}",
        )
    if not got:
        return
    want = [ev for ev in h.audit if h.watch_start_revision <= ev.revision <= last]
    counts = Counter(got)
    for ev, n in counts.items():
        if n > 1:
            v.watch_duplicates += n - 1
            v.add("watch-duplicate", f"event {ev.key!r}@{ev.revision} delivered {n} times")
    want_set = set(want)
    for ev in want:
        if ev not in counts:
            v.watch_missed += 1
            v.add("watch-missed", f"event {ev.key!r}@{ev.revision} never delivered")
    for ev in counts:
        if ev not in want_set:
            v.add(
                "watch-phantom",
                f"event {ev.key!r}={ev.value!r}@{ev.revision} is not in the history",
            )
    for a, b in zip(got, got[1:], strict=False):
        if b.revision < a.revision:
            v.watch_out_of_order += 1
            v.add("watch-out-of-order", f"revision {b.revision} delivered after {a.revision}")
