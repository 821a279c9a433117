"""The crash verifier passes a consistent history and names each kind of fault in a broken
one: a lost acknowledged write, a duplicated or missed watch event, a half-applied txn, a
revision that went back, a phantom value, a restart below the acknowledged revision."""

from __future__ import annotations

import dataclasses

from bench.history import Event, History, Observation, Recovery, Write
from bench.verify import verify


def good_history() -> History:
    """put a=1 @2 (acked); txn b=2,c=3 @3 (acked); put d=4 (failed, never applied);
    put a=5 @4 (failed, but applied: allowed); a watcher from revision 1 saw everything."""
    writes = [
        Write(1, ((b"a", b"1"),), 0.0, 0.1, True, 2),
        Write(2, ((b"b", b"2"), (b"c", b"3")), 0.2, 0.3, True, 3),
        Write(3, ((b"d", b"4"),), 0.4, 0.5, False, 0, "UNAVAILABLE"),
        Write(4, ((b"a", b"5"),), 0.6, 0.7, False, 0, "UNAVAILABLE"),
    ]
    audit = [
        Event(2, b"a", b"1"),
        Event(3, b"b", b"2"),
        Event(3, b"c", b"3"),
        Event(4, b"a", b"5"),
    ]
    return History(
        writes=writes,
        watched=list(audit),
        audit=list(audit),
        point_reads={(b"a", 2): (b"1", 2), (b"b", 3): (b"2", 3), (b"c", 3): (b"3", 3)},
        final={b"a": (b"5", 4), b"b": (b"2", 3), b"c": (b"3", 3)},
        final_revision=4,
        observations=[Observation(0.0, 0.1, 2), Observation(0.2, 0.3, 3), Observation(0.8, 0.9, 4)],
        recoveries=[Recovery(1, 0.5, 0.8, 3, 4)],
    )


def test_consistent_history_passes_with_counts() -> None:
    v = verify(good_history())
    assert v.ok, v.summary()
    assert (v.acknowledged, v.verified, v.lost) == (2, 2, 0)
    assert (v.unacked_applied, v.unacked_absent) == (1, 1)
    assert v.watch_events == 4 and v.watch_duplicates == 0 and v.watch_missed == 0
    assert v.summary().endswith("VERDICT: PASS")


def test_lost_acknowledged_write_is_reported() -> None:
    """The server lost 'a=1' @2: it is neither in the history nor readable at revision 2."""
    h = good_history()
    h.audit = [e for e in h.audit if e.value != b"1"]
    h.watched = list(h.audit)
    h.point_reads[(b"a", 2)] = None
    v = verify(h)
    assert not v.ok and v.lost == 1 and v.verified == 1
    assert "lost" in v.problems and "op 1" in v.problems["lost"][0]
    assert "lost 1" in v.summary() and v.summary().endswith("VERDICT: FAIL")


def test_lost_write_seen_only_by_point_read() -> None:
    """History intact but a Range at the acked revision reads another value: still lost."""
    h = good_history()
    h.point_reads[(b"b", 3)] = (b"other", 3)
    v = verify(h)
    assert v.lost == 1 and list(v.problems) == ["lost"]


def test_duplicated_watch_event_is_reported() -> None:
    """The watcher got b=2 @3 twice (a resume that replayed an event it had)."""
    h = good_history()
    h.watched = h.watched[:3] + [h.watched[1]] + h.watched[3:]
    v = verify(h)
    assert v.watch_duplicates == 1
    assert "watch-duplicate" in v.problems
    assert v.lost == 0 and v.verified == 2  # the data itself is fine


def test_missed_watch_event_is_reported() -> None:
    h = good_history()
    h.watched = [e for e in h.watched if e.key != b"c"]
    v = verify(h)
    assert v.watch_missed == 1 and "watch-missed" in v.problems


def test_out_of_order_watch_event_is_reported() -> None:
    h = good_history()
    h.watched = [h.watched[0], h.watched[3], h.watched[1], h.watched[2]]
    v = verify(h)
    assert v.watch_out_of_order == 1 and "watch-out-of-order" in v.problems


def test_half_applied_txn_is_reported() -> None:
    """Only b=2 of the txn (b=2, c=3) made it: not atomic (and c=3 is lost)."""
    h = good_history()
    h.audit = [e for e in h.audit if e.value != b"3"]
    h.watched = list(h.audit)
    h.final.pop(b"c")
    v = verify(h)
    assert "not-atomic" in v.problems and v.lost == 1


def test_txn_split_over_two_revisions_is_reported() -> None:
    h = good_history()
    h.audit[2] = Event(5, b"c", b"3")
    h.watched = list(h.audit)
    v = verify(h)
    assert "not-atomic" in v.problems


def test_revision_going_back_is_reported() -> None:
    """A read that started after a response at revision 3 saw revision 2."""
    h = good_history()
    h.observations.append(Observation(0.35, 0.4, 2))
    v = verify(h)
    assert list(v.problems) == ["revision-went-back"]


def test_restart_below_acknowledged_revision_is_reported() -> None:
    h = good_history()
    h.recoveries = [dataclasses.replace(h.recoveries[0], revision_after=2)]
    v = verify(h)
    assert "revision-went-back" in v.problems


def test_phantom_and_duplicate_apply_are_reported() -> None:
    """A value nobody wrote, and a value applied twice."""
    h = good_history()
    h.audit.append(Event(5, b"z", b"never-written"))
    h.audit.append(Event(6, b"a", b"1"))
    h.watched = list(h.audit)
    h.final = {b"a": (b"1", 6), b"b": (b"2", 3), b"c": (b"3", 3), b"z": (b"never-written", 5)}
    v = verify(h)
    assert "phantom" in v.problems and "duplicate-apply" in v.problems


def test_final_state_mismatch_is_reported() -> None:
    h = good_history()
    h.final[b"a"] = (b"1", 2)
    v = verify(h)
    assert list(v.problems) == ["final-state"]


def test_watch_unimplemented_after_it_worked_is_reported() -> None:
    """A Watch that delivered events and later answered UNIMPLEMENTED (say, during a
    restart) is a fault; an endpoint without Watch at all is noted, not failed."""
    h = good_history()
    h.watch_errors = {"UNIMPLEMENTED": 2, "UNAVAILABLE": 5}
    v = verify(h)
    assert list(v.problems) == ["watch-unimplemented"]
    h = good_history()
    h.watched, h.watch_supported = [], False
    v = verify(h)
    assert v.ok and not v.watch_checked and "not checked" in v.summary()


def test_watcher_that_stopped_early_is_reported() -> None:
    """Events after the watcher's last one were never delivered: the watch stalled."""
    h = good_history()
    h.watched = h.watched[:3]  # revisions 2 and 3 complete, 4 never came
    v = verify(h)
    assert list(v.problems) == ["watch-stalled"]
    h.watched = []
    assert "watch-stalled" in verify(h).problems
