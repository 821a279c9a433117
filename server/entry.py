"""The bytes of a Raft entry that carries a client request, framed without copies.

An entry's payload is an encoded `InternalRequest`. `frame(field, request_id, body)` builds
those bytes from the already-encoded request (`body`, e.g. `PutRequest.SerializeToString()`)
by writing the protobuf framing by hand: the header field, then `field` as a length-delimited
submessage. This decodes exactly as `InternalRequest(header=..., **{field: request})` would,
without building that message and copying the request into it (the KV hot path).
"""

from __future__ import annotations

from api.etcdserverpb import internal_pb2


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int) -> bytes:
    return varint(number << 3 | 2)  # wire type 2: length-delimited


_FIELDS = internal_pb2.InternalRequest.DESCRIPTOR.fields_by_name
TAGS = {name: _tag(field.number) for name, field in _FIELDS.items() if field.message_type}
HEADER_TAG = _tag(_FIELDS["header"].number)
_ID_TAG = varint(internal_pb2.InternalRequestHeader.DESCRIPTOR.fields_by_name["ID"].number << 3)


def frame(field: str, request_id: int, body: bytes) -> bytes:
    header = _ID_TAG + varint(request_id)
    return b"".join((HEADER_TAG, varint(len(header)), header, TAGS[field], varint(len(body)), body))
