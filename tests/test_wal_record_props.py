"""Property tests of the frame codec (Hypothesis, derandomized so runs repeat exactly): any
record sequence round-trips; a buffer cut anywhere reads back as a prefix; a frame never
validates at an offset other than where it was written."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wal.record import (
    Entry,
    HardState,
    SnapshotMarker,
    check_frame,
    encode_entries,
    encode_snapshot,
    encode_state,
    scan_segment,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
entry = st.builds(Entry, u64, u64, st.integers(0, 2**32 - 1), st.binary(max_size=64))
record = st.one_of(
    entry,
    st.builds(HardState, u64, u64, u64),
    st.builds(SnapshotMarker, u64, u64),
)
PROFILE = settings(derandomize=True, max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def encode(records: list[object], prev: int = 0) -> tuple[bytes, list[int]]:
    """The frames of `records` and each frame's offset."""
    out: list[bytes] = []
    offsets = []
    crc = prev
    size = 0
    for r in records:
        before = len(out)
        if isinstance(r, Entry):
            crc = encode_entries(out, [r], crc, 0)
        elif isinstance(r, HardState):
            crc = encode_state(out, r, crc, 0)
        else:
            assert isinstance(r, SnapshotMarker)
            crc = encode_snapshot(out, r, crc, 0)
        offsets.append(size)
        size += sum(len(p) for p in out[before:])
    return b"".join(out), offsets


@PROFILE
@given(st.lists(record, max_size=20), st.integers(0, 2**32 - 1))
def test_round_trip(records: list[object], prev: int) -> None:
    """Encoded records scan back equal, in order, ending cleanly; frames are 8-byte aligned."""
    buf, offsets = encode(records, prev)
    scan = scan_segment(buf + bytes(64), prev)
    assert scan.bad is None and [r[1] for r in scan.records] == records
    assert [r[2] for r in scan.records] == offsets and all(o % 8 == 0 for o in offsets)


@PROFILE
@given(st.lists(record, min_size=1, max_size=12), st.data())
def test_cut_anywhere_reads_a_prefix(records: list[object], data: st.DataObject) -> None:
    """A buffer cut at any byte (the rest zeroes, as preallocated) gives exactly the records
    whose bytes all reached the buffer (a frame whose lost tail was zeroes anyway counts),
    then a bad frame or a clean end at the next frame's offset."""
    buf, offsets = encode(records)
    cut = data.draw(st.integers(0, len(buf)))
    damaged = buf[:cut] + bytes(len(buf) - cut)
    ends = offsets[1:] + [len(buf)]
    whole = 0
    while whole < len(records) and damaged[: ends[whole]] == buf[: ends[whole]]:
        whole += 1
    scan = scan_segment(damaged, None)
    assert [r[1] for r in scan.records] == records[:whole]
    if whole < len(records):
        assert scan.end == offsets[whole]


@PROFILE
@given(st.lists(record, min_size=2, max_size=8))
def test_frames_validate_only_where_written(records: list[object]) -> None:
    """No 8-byte aligned offset inside the frames validates as a frame except real starts:
    the torn-tail/corruption judgement never sees ghosts of our own framing."""
    buf, offsets = encode(records)
    for offset in range(0, len(buf), 8):
        ok = not isinstance(check_frame(buf, offset), str)
        assert ok == (offset in offsets), offset
