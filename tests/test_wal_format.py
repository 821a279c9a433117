"""The frame layout of wal/FORMAT.md, pinned to golden bytes: any change to the encoder (or a
different CRC implementation) that would make old logs unreadable fails here."""

from __future__ import annotations

import struct

from wal.record import (
    HEADER,
    MAGIC,
    Entry,
    HardState,
    crc32c,
    encode_entries,
    encode_state,
    scan_segment,
)

ENTRY_FRAME_HEX = (
    "921fa21e000000001b0000a00200a157000000000000000001000000000000000200000000000000"
    "00000000000000006162630000000000"
)
STATE_FRAME_HEX = (
    "85e96c5b921fa21e180000000300a157300000000000000002000000000000000100000000000000"
    "0100000000000000"
)


def test_golden_frames() -> None:
    """An entry frame and a hard-state frame chained after it, byte for byte."""
    out: list[bytes] = []
    crc = encode_entries(out, [Entry(1, 2, 0, b"abc")], 0, 0)
    assert b"".join(out).hex() == ENTRY_FRAME_HEX
    out = []
    encode_state(out, HardState(2, 1, 1), crc, 48)
    assert b"".join(out).hex() == STATE_FRAME_HEX


def test_layout_fields() -> None:
    """The header fields sit where FORMAT.md says: crc chained over bytes 4.. incl. padding,
    length word = n | pad << 29, magic at 14, frames 8-byte aligned."""
    frame = bytes.fromhex(ENTRY_FRAME_HEX)
    crc, prev, word, rtype, reserved, magic, synced = HEADER.unpack_from(frame)
    n, pad = word & ((1 << 29) - 1), word >> 29
    assert (n, pad, rtype, reserved, magic, synced) == (27, 5, 2, 0, MAGIC, 0)
    assert len(frame) == 24 + n + pad and len(frame) % 8 == 0
    assert crc == crc32c(frame[4:], prev) and prev == 0
    assert struct.unpack_from("<QQI", frame, 24) == (1, 2, 0) and frame[48:51] == b"abc"
    scan = scan_segment(bytes.fromhex(ENTRY_FRAME_HEX + STATE_FRAME_HEX), 0)
    assert scan.bad is None and [r[1] for r in scan.records] == [
        Entry(1, 2, 0, b"abc"),
        HardState(2, 1, 1),
    ]
