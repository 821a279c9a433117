"""The one binary codec of raft/: messages (peer transport), entries, hard states and
configuration changes. Little-endian fixed-width headers (struct), then variable parts.

Message: header <B Q Q Q Q Q Q B Q I I B> = type, to, from, term, log_term, index, commit,
reject, reject_hint, entry count, context length, has-snapshot; then the context, the entries
(each <Q Q B I> term, index, type, data length, then data) and the snapshot if any (<Q Q I I Q>
index, term, voter count, learner count, data length, then voter and learner IDs as Q, then
data). Decoding checks lengths and raises CodecError on anything malformed.
"""

from __future__ import annotations

import struct

from raft.errors import RaftError
from raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    Snapshot,
)


class CodecError(RaftError):
    """Bytes that do not decode to a Raft record."""


_MSG = struct.Struct("<BQQQQQQBQIIB")
_ENT = struct.Struct("<QQBI")
_SNAP = struct.Struct("<QQIIQ")
_HS = struct.Struct("<QQQ")
_CC = struct.Struct("<BQI")
_MSG_TYPES = frozenset(int(t) for t in MessageType)


def encode_entry(e: Entry) -> bytes:
    return _ENT.pack(e.term, e.index, e.type, len(e.data)) + e.data


def decode_entry(b: bytes) -> Entry:
    e, end = _decode_entry_at(memoryview(b), 0)
    if end != len(b):
        raise CodecError(f"{len(b) - end} trailing bytes after an entry")
    return e


def _decode_entry_at(mv: memoryview, off: int) -> tuple[Entry, int]:
    try:
        term, index, typ, n = _ENT.unpack_from(mv, off)
    except struct.error as err:
        raise CodecError(f"truncated entry header at {off}") from err
    off += _ENT.size
    if off + n > len(mv):
        raise CodecError(f"entry data of {n} bytes runs past the end")
    return Entry(term, index, typ, bytes(mv[off : off + n])), off + n


def encode_message(m: Message) -> bytes:
    snap = m.snapshot
    parts = [
        _MSG.pack(
            m.type,
            m.to,
            m.from_,
            m.term,
            m.log_term,
            m.index,
            m.commit,
            m.reject,
            m.reject_hint,
            len(m.entries),
            len(m.context),
            snap is not None,
        ),
        m.context,
    ]
    pack = _ENT.pack
    for e in m.entries:
        parts.append(pack(e.term, e.index, e.type, len(e.data)))
        parts.append(e.data)
    if snap is not None:
        cs = snap.conf_state
        parts.append(
            _SNAP.pack(snap.index, snap.term, len(cs.voters), len(cs.learners), len(snap.data))
        )
        parts.append(
            struct.pack(f"<{len(cs.voters) + len(cs.learners)}Q", *cs.voters, *cs.learners)
        )
        parts.append(snap.data)
    return b"".join(parts)


def decode_message(b: bytes) -> Message:
    mv = memoryview(b)
    try:
        (typ, to, frm, term, log_term, index, commit, reject, hint, n_ents, n_ctx, has_snap) = (
            _MSG.unpack_from(mv, 0)
        )
    except struct.error as err:
        raise CodecError("truncated message header") from err
    if typ not in _MSG_TYPES:
        raise CodecError(f"unknown message type {typ}")
    off = _MSG.size
    if off + n_ctx > len(mv):
        raise CodecError("message context runs past the end")
    ctx = bytes(mv[off : off + n_ctx])
    off += n_ctx
    ents = []
    for _ in range(n_ents):
        e, off = _decode_entry_at(mv, off)
        ents.append(e)
    snap = None
    if has_snap:
        snap, off = _decode_snapshot_at(mv, off)
    if off != len(mv):
        raise CodecError(f"{len(mv) - off} trailing bytes after a message")
    return Message(
        typ, to, frm, term, log_term, index, tuple(ents), commit, snap, bool(reject), hint, ctx
    )


def _decode_snapshot_at(mv: memoryview, off: int) -> tuple[Snapshot, int]:
    try:
        index, term, n_voters, n_learners, n_data = _SNAP.unpack_from(mv, off)
        off += _SNAP.size
        ids = struct.unpack_from(f"<{n_voters + n_learners}Q", mv, off)
    except struct.error as err:
        raise CodecError("truncated snapshot header") from err
    off += 8 * (n_voters + n_learners)
    if off + n_data > len(mv):
        raise CodecError("snapshot data runs past the end")
    cs = ConfState(tuple(ids[:n_voters]), tuple(ids[n_voters:]))
    return Snapshot(index, term, cs, bytes(mv[off : off + n_data])), off + n_data


def encode_hard_state(hs: HardState) -> bytes:
    return _HS.pack(hs.term, hs.vote, hs.commit)


def decode_hard_state(b: bytes) -> HardState:
    if len(b) != _HS.size:
        raise CodecError(f"hard state is {len(b)} bytes, want {_HS.size}")
    return HardState(*_HS.unpack(b))


def encode_conf_change(cc: ConfChange) -> bytes:
    return _CC.pack(cc.type, cc.node_id, len(cc.context)) + cc.context


def decode_conf_change(b: bytes) -> ConfChange:
    try:
        typ, node_id, n = _CC.unpack_from(b, 0)
    except struct.error as err:
        raise CodecError("truncated conf change") from err
    if len(b) != _CC.size + n:
        raise CodecError("conf change context length mismatch")
    try:
        cc_type = ConfChangeType(typ)
    except ValueError as err:
        raise CodecError(f"unknown conf change type {typ}") from err
    return ConfChange(cc_type, node_id, bytes(b[_CC.size :]))
