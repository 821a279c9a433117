"""The record of a crash-recovery run: what clients sent and what the endpoint answered.

Plain frozen data, no behaviour: the crash driver fills it, `bench.verify` judges it, and a
test can write one by hand. Times are monotonic seconds of the recording process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PUT = 0
DELETE = 1


@dataclass(frozen=True, slots=True)
class Write:
    """One put (one pair) or one txn (several pairs on distinct keys, all-or-nothing).
    Every value is unique in the run, so an event names the write it came from.
    Invariant: acked == (revision > 0)."""

    op_id: int
    puts: tuple[tuple[bytes, bytes], ...]
    start_s: float
    end_s: float
    acked: bool
    revision: int = 0
    error: str = ""

    @property
    def is_txn(self) -> bool:
        return len(self.puts) > 1


@dataclass(frozen=True, slots=True)
class Event:
    """A watch event as delivered (mvccpb.Event: type, key, value, mod_revision)."""

    revision: int
    key: bytes
    value: bytes
    type: int = PUT


@dataclass(frozen=True, slots=True)
class Observation:
    """A successful response and the revision in its header, with its call's start and end."""

    start_s: float
    end_s: float
    revision: int


@dataclass(frozen=True, slots=True)
class Recovery:
    """One kill -9 / restart cycle. Invariant: ready_s >= kill_s."""

    cycle: int
    kill_s: float
    ready_s: float
    max_acked_revision: int  # highest revision acknowledged before the kill
    revision_after: int  # revision in the header of the first successful read after it

    @property
    def recovery_s(self) -> float:
        return self.ready_s - self.kill_s


@dataclass(slots=True)
class History:
    """Everything recorded. `watched` is the resuming watcher's stream of events in delivery
    order; `audit` is every event of the prefix from revision 1, read once at the end by Range
    (not by Watch);
    `point_reads` maps (key, revision) to (value, mod_revision) from a Range at that revision
    (None when the key had no value there); `final` is the last linearizable Range."""

    writes: list[Write] = field(default_factory=list)
    watched: list[Event] = field(default_factory=list)
    watch_start_revision: int = 1
    watch_supported: bool = True  # False: the endpoint answered Watch with UNIMPLEMENTED
    watch_resumes: int = 0  # streams re-created (and confirmed) after a break
    watch_errors: dict[str, int] = field(default_factory=dict)  # stream failures, by code
    audit: list[Event] = field(default_factory=list)
    point_reads: dict[tuple[bytes, int], tuple[bytes, int] | None] = field(default_factory=dict)
    final: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    final_revision: int = 0
    observations: list[Observation] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
