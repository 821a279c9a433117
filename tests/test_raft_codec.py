"""raft.codec round-trips every record exactly and refuses malformed bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft import ConfChange, ConfChangeType, ConfState, Entry, HardState, Message, Snapshot
from raft.codec import (
    CodecError,
    decode_conf_change,
    decode_entry,
    decode_hard_state,
    decode_message,
    encode_conf_change,
    encode_entry,
    encode_hard_state,
    encode_message,
)

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
entries = st.builds(Entry, u64, u64, st.integers(0, 1), st.binary(max_size=64))
snapshots = st.builds(
    Snapshot,
    u64,
    u64,
    st.builds(
        ConfState,
        st.lists(u64, max_size=5).map(tuple),
        st.lists(u64, max_size=3).map(tuple),
    ),
    st.binary(max_size=64),
)
messages = st.builds(
    Message,
    st.integers(0, 18),
    u64,
    u64,
    u64,
    u64,
    u64,
    st.lists(entries, max_size=5).map(tuple),
    u64,
    st.none() | snapshots,
    st.booleans(),
    u64,
    st.binary(max_size=32),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(messages)
def test_message_round_trip(m: Message) -> None:
    """decode(encode(m)) == m for any message, and every strict prefix is refused."""
    b = encode_message(m)
    assert decode_message(b) == m
    for cut in {0, 1, len(b) // 2, len(b) - 1}:
        if cut < len(b):
            with pytest.raises(CodecError):
                decode_message(b[:cut])


@settings(derandomize=True)
@given(entries)
def test_entry_round_trip(e: Entry) -> None:
    """Entries round-trip; trailing bytes are refused."""
    assert decode_entry(encode_entry(e)) == e
    with pytest.raises(CodecError):
        decode_entry(encode_entry(e) + b"\x00")


def test_small_records_round_trip() -> None:
    """Hard states and configuration changes round-trip; bad lengths and types are refused."""
    hs = HardState(5, 2, 99)
    assert decode_hard_state(encode_hard_state(hs)) == hs
    cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, 7, b"ctx")
    assert decode_conf_change(encode_conf_change(cc)) == cc
    with pytest.raises(CodecError):
        decode_hard_state(b"\x00" * 23)
    with pytest.raises(CodecError):
        decode_conf_change(b"\x09" + b"\x00" * 12)
    with pytest.raises(CodecError):
        decode_message(b"\x63" + b"\x00" * 100)
