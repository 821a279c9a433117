"""HPACK (server/wire/hpack.py) against RFC 7541 Appendix C, its error rules, and real grpcio.

The Appendix C transcripts check both the decoded lists and the dynamic table (entries, sizes)
after every block, so a mistake in indexing, insertion or eviction shows up at the step where
it happens. Every error rule has its own test asserting HPACKError on a minimal block.
"""

from __future__ import annotations

import random
import socket
import struct
import threading

import grpc
import pytest

from server.wire import hpack
from server.wire.hpack import (
    Decoder,
    Encoder,
    HPACKError,
    decode_integer,
    encode_integer,
    huffman_decode,
    huffman_encode,
)

H = bytes.fromhex


# ---------------------------------------------------------------------------------------------
# C.1 integers


def test_integer_examples_c1() -> None:
    """C.1.1-C.1.3: 10 and 1337 in a 5-bit prefix, 42 at a byte boundary; and back."""
    assert encode_integer(10, 5) == H("0a")
    assert encode_integer(1337, 5) == H("1f9a0a")
    assert encode_integer(42, 8) == H("2a")
    assert decode_integer(H("1f9a0a"), 0, 5) == (1337, 3)
    # Flag bits outside the prefix are ignored by the decoder and kept by the encoder.
    assert encode_integer(1337, 5, 0xE0) == H("ff9a0a")
    assert decode_integer(H("ff9a0a"), 0, 5) == (1337, 3)


def test_integer_round_trip_at_prefix_edges() -> None:
    """Values around each prefix maximum and up to the 2**32 limit survive encode/decode."""
    for prefix_bits in range(1, 9):
        prefix_max = (1 << prefix_bits) - 1
        for value in (0, prefix_max - 1, prefix_max, prefix_max + 1, 127 + prefix_max, 2**32):
            encoded = encode_integer(value, prefix_bits)
            assert decode_integer(encoded, 0, prefix_bits) == (value, len(encoded))


# ---------------------------------------------------------------------------------------------
# C.2 single representations


def test_literal_with_indexing_c2_1() -> None:
    """C.2.1: a new-name literal with incremental indexing lands in the table (size 55)."""
    decoder = Decoder()
    block = H("400a637573746f6d2d6b65790d637573746f6d2d686561646572")
    assert decoder.decode(block) == [(b"custom-key", b"custom-header")]
    assert decoder.dynamic_table() == [(b"custom-key", b"custom-header")]
    assert decoder.table_bytes == 55


def test_literal_without_indexing_c2_2() -> None:
    """C.2.2: an indexed-name literal without indexing leaves the table empty."""
    decoder = Decoder()
    assert decoder.decode(H("040c2f73616d706c652f70617468")) == [(b":path", b"/sample/path")]
    assert decoder.dynamic_table() == [] and decoder.table_bytes == 0


def test_literal_never_indexed_c2_3() -> None:
    """C.2.3: a never-indexed new-name literal decodes and leaves the table empty."""
    decoder = Decoder()
    assert decoder.decode(H("100870617373776f726406736563726574")) == [(b"password", b"secret")]
    assert decoder.dynamic_table() == [] and decoder.table_bytes == 0


def test_indexed_static_c2_4() -> None:
    """C.2.4: one byte 0x82 is static entry 2, :method GET."""
    decoder = Decoder()
    assert decoder.decode(H("82")) == [(b":method", b"GET")]
    assert decoder.dynamic_table() == []


# ---------------------------------------------------------------------------------------------
# C.3-C.6 sequences on one connection

AUTHORITY = (b":authority", b"www.example.com")
NO_CACHE = (b"cache-control", b"no-cache")
CUSTOM = (b"custom-key", b"custom-value")
REQUEST_1 = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), AUTHORITY]
REQUEST_2 = [*REQUEST_1, NO_CACHE]
REQUEST_3 = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":path", b"/index.html"),
    AUTHORITY,
    CUSTOM,
]
REQUEST_TABLES = [
    ([AUTHORITY], 57),
    ([NO_CACHE, AUTHORITY], 110),
    ([CUSTOM, NO_CACHE, AUTHORITY], 164),
]

PRIVATE = (b"cache-control", b"private")
DATE_21 = (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT")
DATE_22 = (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT")
LOCATION = (b"location", b"https://www.example.com")
GZIP = (b"content-encoding", b"gzip")
COOKIE = (b"set-cookie", b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
RESPONSE_1 = [(b":status", b"302"), PRIVATE, DATE_21, LOCATION]
RESPONSE_2 = [(b":status", b"307"), PRIVATE, DATE_21, LOCATION]
RESPONSE_3 = [(b":status", b"200"), PRIVATE, DATE_22, LOCATION, GZIP, COOKIE]
RESPONSE_TABLES = [
    ([LOCATION, DATE_21, PRIVATE, (b":status", b"302")], 222),
    ([(b":status", b"307"), LOCATION, DATE_21, PRIVATE], 222),
    ([COOKIE, GZIP, DATE_22], 215),
]

SEQUENCES = {
    "C.3 requests, raw": (
        4096,
        [
            "828684410f7777772e6578616d706c652e636f6d",
            "828684be58086e6f2d6361636865",
            "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
        ],
        [REQUEST_1, REQUEST_2, REQUEST_3],
        REQUEST_TABLES,
    ),
    "C.4 requests, Huffman": (
        4096,
        [
            "828684418cf1e3c2e5f23a6ba0ab90f4ff",
            "828684be5886a8eb10649cbf",
            "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
        ],
        [REQUEST_1, REQUEST_2, REQUEST_3],
        REQUEST_TABLES,
    ),
    "C.5 responses, raw, 256-byte table": (
        256,
        [
            "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120"
            "474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
            "4803333037c1c0bf",
            "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738"
            "666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d33"
            "3630303b2076657273696f6e3d31",
        ],
        [RESPONSE_1, RESPONSE_2, RESPONSE_3],
        RESPONSE_TABLES,
    ),
    "C.6 responses, Huffman, 256-byte table": (
        256,
        [
            "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad1718"
            "63c78f0b97c8e9ae82ae43d3",
            "4883640effc1c0bf",
            "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7"
            "b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
        ],
        [RESPONSE_1, RESPONSE_2, RESPONSE_3],
        RESPONSE_TABLES,
    ),
}


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_appendix_c_sequences(name: str) -> None:
    """C.3-C.6: three blocks on one decoder; after each, the list, table entries and size."""
    table_size, blocks, expected_lists, expected_tables = SEQUENCES[name]
    decoder = Decoder(table_size)
    for step, (block, expected, (entries, size)) in enumerate(
        zip(blocks, expected_lists, expected_tables, strict=True), start=1
    ):
        assert decoder.decode(H(block)) == expected, f"{name} block {step}"
        assert decoder.dynamic_table() == entries, f"{name} table after block {step}"
        assert decoder.table_bytes == size, f"{name} table size after block {step}"
        sizes = sum(len(n) + len(v) + 32 for n, v in decoder.dynamic_table())
        assert sizes == size


# ---------------------------------------------------------------------------------------------
# Huffman


def test_huffman_encodes_as_the_rfc_examples() -> None:
    """Our encoder reproduces the Huffman strings of C.4 and C.6 bit for bit."""
    assert huffman_encode(b"www.example.com") == H("f1e3c2e5f23a6ba0ab90f4ff")
    assert huffman_encode(b"no-cache") == H("a8eb10649cbf")
    assert huffman_encode(b"custom-value") == H("25a849e95bb8e8b4bf")
    assert huffman_encode(b"302") == H("6402")
    assert huffman_encode(b"https://www.example.com") == H("9d29ad171863c78f0b97c8e9ae82ae43d3")
    assert huffman_encode(b"") == b""


def test_huffman_codes_spot_check_appendix_b() -> None:
    """Codes derived from the lengths match Appendix B at its ends and in the middle."""
    codes = hpack.HUFFMAN_CODES
    assert codes[ord("0")] == 0x0 and codes[ord(":")] == 0x5C and codes[ord("A")] == 0x21
    assert codes[0] == 0x1FF8 and codes[255] == 0x3FFFFEE and codes[256] == 0x3FFFFFFF


def test_huffman_round_trip_every_byte_value() -> None:
    """Each of the 256 byte values alone, and all of them in one string, decode back."""
    for value in range(256):
        single = bytes((value,))
        assert huffman_decode(huffman_encode(single)) == single, value
    everything = bytes(range(256))
    assert huffman_decode(huffman_encode(everything)) == everything


def test_huffman_round_trip_seeded_random_strings() -> None:
    """Seeded random strings (mixed printable and binary) survive encode/decode."""
    seed = 7541
    rng = random.Random(seed)
    for case in range(500):
        length = rng.randrange(0, 64)
        if case % 2:
            data = bytes(rng.randrange(256) for _ in range(length))
        else:
            data = bytes(rng.choice(b"abcxyz0123/-.:_ ") for _ in range(length))
        assert huffman_decode(huffman_encode(data)) == data, f"seed={seed} case={case}"


def test_huffman_string_cache_is_bounded_and_correct() -> None:
    """Decoding through blocks fills the cache but never past its bound; hits stay correct."""
    seed = 11
    rng = random.Random(seed)
    decoder = Decoder()
    limit = hpack.HUFFMAN_CACHE_ENTRIES_MAX
    values = [b"v%d-%d" % (i, rng.randrange(10**6)) for i in range(limit + 200)]
    for value in values:
        block = bytes((0x0F, 0x10)) + bytes((0x80 | len(huffman_encode(value)),))
        block += huffman_encode(value)
        assert decoder.decode(block) == [(b"content-type", value)], f"seed={seed}"
        assert len(hpack._HUFFMAN_CACHE) <= limit
    # A repeat (now a cache hit for the recent ones) decodes the same.
    last = values[-1]
    block = b"\x0f\x10" + bytes((0x80 | len(huffman_encode(last)),)) + huffman_encode(last)
    assert decoder.decode(block) == [(b"content-type", last)]


# ---------------------------------------------------------------------------------------------
# Errors: one rule each


def test_error_index_zero() -> None:
    """An indexed field with index 0 is an error."""
    with pytest.raises(HPACKError):
        Decoder().decode(H("80"))


def test_error_index_past_dynamic_table() -> None:
    """Index 62 with an empty dynamic table (and 63 with one entry) is out of range."""
    with pytest.raises(HPACKError):
        Decoder().decode(H("be"))
    decoder = Decoder()
    decoder.decode(H("400161026232"))  # one entry: a: b2
    assert decoder.decode(H("be")) == [(b"a", b"b2")]
    with pytest.raises(HPACKError):
        decoder.decode(H("bf"))


def test_error_name_index_past_dynamic_table() -> None:
    """A literal whose name index points past the tables is an error."""
    with pytest.raises(HPACKError):
        Decoder().decode(H("7e0178"))  # incremental indexing, name index 62, table empty


def test_error_integer_over_limit() -> None:
    """An index of 2**32 + 1 is over the implementation limit."""
    # Build 0xff + continuation bytes for 2**32 + 1 by hand (encode_integer refuses it).
    rest = 2**32 + 1 - 127
    tail = bytearray()
    while rest >= 0x80:
        tail.append(0x80 | (rest & 0x7F))
        rest >>= 7
    tail.append(rest)
    block = b"\xff" + bytes(tail)
    assert len(tail) == 5
    with pytest.raises(HPACKError, match="over the limit"):
        Decoder().decode(block)


def test_error_integer_too_many_continuation_bytes() -> None:
    """Six continuation bytes are over-long even if they only carry zeros."""
    with pytest.raises(HPACKError, match="too long"):
        Decoder().decode(H("ff808080808000"))


def test_error_integer_zero_padding() -> None:
    """A trailing zero continuation byte (non-minimal encoding) is an error; 0xff 0x00 is not."""
    with pytest.raises(HPACKError, match="not minimal"):
        Decoder().decode(H("ff8100"))
    assert decode_integer(H("ff00"), 0, 7) == (127, 2)


def test_error_integer_truncated() -> None:
    """A block ending inside an integer's continuation bytes is an error."""
    with pytest.raises(HPACKError, match="truncated"):
        Decoder().decode(H("ff80"))


def test_error_string_runs_past_block() -> None:
    """A string length longer than the rest of the block is an error."""
    with pytest.raises(HPACKError, match="past the end"):
        Decoder().decode(H("04056162"))


def test_error_block_ends_before_value() -> None:
    """A literal cut off before its value string is an error."""
    with pytest.raises(HPACKError, match="truncated"):
        Decoder().decode(H("04"))


def test_error_size_update_after_field() -> None:
    """A dynamic table size update after a field in the same block is an error."""
    with pytest.raises(HPACKError, match="after a header field"):
        Decoder().decode(H("8220"))


def test_error_size_update_over_allowed() -> None:
    """An update above our SETTINGS_HEADER_TABLE_SIZE is an error, even after we lower it."""
    with pytest.raises(HPACKError, match="over the limit"):
        Decoder(4096).decode(encode_integer(4097, 5, 0x20))
    decoder = Decoder(4096)
    decoder.max_allowed_table_size = 100
    with pytest.raises(HPACKError, match="over the limit"):
        decoder.decode(encode_integer(101, 5, 0x20))
    decoder.decode(encode_integer(100, 5, 0x20))
    assert decoder.table_bytes_max == 100


def test_error_huffman_eos() -> None:
    """A Huffman string containing EOS (30 ones) is an error, alone and inside a block."""
    with pytest.raises(HPACKError):
        huffman_decode(H("ffffffff"))
    with pytest.raises(HPACKError):
        huffman_decode(huffman_encode(b"ab")[:-1] + H("ffffffff"))
    with pytest.raises(HPACKError):
        Decoder().decode(H("0f1084ffffffff"))


def test_error_huffman_padding_too_long() -> None:
    """Padding of 8 or more one-bits is an error."""
    assert huffman_encode(b"a") == H("1f")  # 00011 + 3 bits of padding
    with pytest.raises(HPACKError):
        huffman_decode(H("1fff"))
    with pytest.raises(HPACKError):
        huffman_decode(H("ff"))


def test_error_huffman_padding_not_ones() -> None:
    """Padding that is not the high bits of EOS (all ones) is an error."""
    with pytest.raises(HPACKError):
        huffman_decode(H("18"))  # 00011 + 000
    with pytest.raises(HPACKError):
        huffman_decode(H("1e"))  # 00011 + 110


# ---------------------------------------------------------------------------------------------
# Dynamic table behaviour


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal with incremental indexing and a new name, raw strings."""
    return b"\x40" + encode_integer(len(name), 7) + name + encode_integer(len(value), 7) + value


def test_eviction_oldest_first_and_oversized_entry_empties() -> None:
    """Entries leave oldest first to make room; one bigger than the table empties it."""
    decoder = Decoder(100)
    decoder.decode(_literal(b"a", b"1") + _literal(b"b", b"2") + _literal(b"c", b"3"))
    # 34 bytes each: only two fit in 100.
    assert decoder.dynamic_table() == [(b"c", b"3"), (b"b", b"2")]
    assert decoder.table_bytes == 68
    assert decoder.decode(H("bebf")) == [(b"c", b"3"), (b"b", b"2")]
    big = _literal(b"big", b"x" * 70)  # 105 bytes > 100
    assert decoder.decode(big) == [(b"big", b"x" * 70)]
    assert decoder.dynamic_table() == [] and decoder.table_bytes == 0


def test_size_update_to_zero_then_growth() -> None:
    """Updating to 0 evicts everything; a later update re-grows the table and inserts work."""
    decoder = Decoder(4096)
    decoder.decode(_literal(b"k1", b"v1") + _literal(b"k2", b"v2"))
    assert len(decoder.dynamic_table()) == 2
    assert decoder.decode(H("20")) == []
    assert decoder.dynamic_table() == [] and decoder.table_bytes_max == 0
    # With a zero-size table an incremental literal decodes but is not kept.
    assert decoder.decode(_literal(b"k3", b"v3")) == [(b"k3", b"v3")]
    assert decoder.dynamic_table() == []
    # Two updates in a row at the start of a block are allowed (RFC 7541 4.2).
    block = encode_integer(0, 5, 0x20) + encode_integer(4096, 5, 0x20) + _literal(b"k4", b"v4")
    assert decoder.decode(block) == [(b"k4", b"v4")]
    assert decoder.dynamic_table() == [(b"k4", b"v4")] and decoder.table_bytes_max == 4096


def test_size_update_shrink_evicts_to_fit() -> None:
    """A smaller size keeps the newest entries that fit."""
    decoder = Decoder(4096)
    decoder.decode(_literal(b"a", b"1") + _literal(b"b", b"2") + _literal(b"c", b"3"))
    decoder.decode(encode_integer(70, 5, 0x20))
    assert decoder.dynamic_table() == [(b"c", b"3"), (b"b", b"2")] and decoder.table_bytes == 68


# ---------------------------------------------------------------------------------------------
# Encoder


def test_encoder_forms() -> None:
    """Full static matches are one byte; static names use a 4-bit index; others are literals."""
    encoder = Encoder()
    assert encoder.encode([(b":status", b"200")]) == H("88")
    assert encoder.encode([(b"content-type", b"application/grpc")]) == (
        H("0f10") + bytes((16,)) + b"application/grpc"
    )
    assert encoder.encode([(b"grpc-status", b"0")]) == H("000b") + b"grpc-status" + H("01") + b"0"


def test_encoder_round_trip_leaves_decoder_table_empty() -> None:
    """A seeded mix of headers decodes back identically, twice, with no table insertions."""
    seed = 42
    rng = random.Random(seed)
    names = [
        b":status",
        b"content-type",
        b"grpc-status",
        b"grpc-message",
        b"date",
        b"x",
        b"y" * 150,
    ]
    headers = [
        (rng.choice(names), bytes(rng.randrange(32, 127) for _ in range(rng.randrange(0, 200))))
        for _ in range(30)
    ]
    headers.append((b":status", b"200"))
    encoder = Encoder()
    block = encoder.encode(headers)
    assert encoder.encode(headers) == block, "stateless: same headers, same block"
    decoder = Decoder()
    for _ in range(2):
        assert decoder.decode(block) == headers, f"seed={seed}"
    assert decoder.dynamic_table() == []


# ---------------------------------------------------------------------------------------------
# Real grpcio client headers

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_DATA = 0x0
FRAME_HEADERS = 0x1
FRAME_SETTINGS = 0x4
FRAME_CONTINUATION = 0x9
FLAG_ACK = 0x1
FLAG_END_STREAM = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20


def _recv_exactly(conn: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise AssertionError(f"peer closed after {len(data)} of {count} bytes")
        data += chunk
    return bytes(data)


def _frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + struct.pack(">BBI", frame_type, flags, stream_id)
        + payload
    )


def _read_frame(conn: socket.socket) -> tuple[int, int, int, bytes]:
    header = _recv_exactly(conn, 9)
    length = int.from_bytes(header[:3], "big")
    frame_type, flags, stream_id = struct.unpack(">BBI", header[3:])
    return frame_type, flags, stream_id & 0x7FFFFFFF, _recv_exactly(conn, length)


def _read_header_block(conn: socket.socket) -> tuple[int, bytes]:
    """Skips frames (acking SETTINGS) up to a HEADERS, joins CONTINUATIONs to END_HEADERS."""
    while True:
        frame_type, flags, stream_id, payload = _read_frame(conn)
        if frame_type == FRAME_SETTINGS and not flags & FLAG_ACK:
            conn.sendall(_frame(FRAME_SETTINGS, FLAG_ACK, 0, b""))
        if frame_type == FRAME_HEADERS:
            break
    if flags & FLAG_PADDED:
        payload = payload[1 : len(payload) - payload[0]]
    if flags & FLAG_PRIORITY:
        payload = payload[5:]
    block = payload
    while not flags & FLAG_END_HEADERS:
        frame_type, flags, _, payload = _read_frame(conn)
        assert frame_type == FRAME_CONTINUATION
        block += payload
    return stream_id, block


def _respond(conn: socket.socket, stream_id: int, message: bytes) -> None:
    """A unary gRPC response whose header and trailer blocks come from our Encoder."""
    encoder = Encoder()
    headers = encoder.encode([(b":status", b"200"), (b"content-type", b"application/grpc")])
    trailers = encoder.encode([(b"grpc-status", b"0")])
    data = b"\x00" + len(message).to_bytes(4, "big") + message
    conn.sendall(
        _frame(FRAME_HEADERS, FLAG_END_HEADERS, stream_id, headers)
        + _frame(FRAME_DATA, 0, stream_id, data)
        + _frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, stream_id, trailers)
    )


def test_grpcio_client_headers_decode_and_our_responses_are_accepted() -> None:
    """Two real grpcio unary calls on one connection: both HEADERS blocks decode on one
    Decoder (the second against the dynamic table the first filled) to the :path and
    content-type the calls sent, and grpcio accepts responses whose blocks our Encoder made.

    A plain socket plays the server: SETTINGS, SETTINGS ACKs, and hand-built frames.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])
    call = channel.unary_unary("/etcdserverpb.KV/Put")
    replies: list[bytes] = []
    errors: list[grpc.RpcError] = []

    def run_calls() -> None:
        try:
            for _ in range(2):
                replies.append(call(b"\x0a\x01k", timeout=5))
        except grpc.RpcError as error:
            errors.append(error)

    caller = threading.Thread(target=run_calls)
    caller.start()
    decoder = Decoder()
    blocks = []
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            assert _recv_exactly(conn, len(PREFACE)) == PREFACE
            conn.sendall(_frame(FRAME_SETTINGS, 0, 0, b""))
            for expected_stream in (1, 3):
                stream_id, block = _read_header_block(conn)
                assert stream_id == expected_stream
                blocks.append((block, decoder.decode(block)))
                _respond(conn, stream_id, b"\x0a\x00")
            caller.join(timeout=10)
    finally:
        listener.close()
        caller.join(timeout=10)
        channel.close()
    assert not caller.is_alive()
    assert not errors, errors
    assert replies == [b"\x0a\x00", b"\x0a\x00"]
    for _, headers in blocks:
        fields = dict(headers)
        assert fields[b":path"] == b"/etcdserverpb.KV/Put"
        assert fields[b"content-type"] == b"application/grpc"
        assert fields[b":method"] == b"POST"
        assert fields[b"te"] == b"trailers"
        assert all(name == name.lower() for name, _ in headers)
    # The first request filled the dynamic table; the second leaned on it.
    assert decoder.dynamic_table()
    assert len(blocks[1][0]) < len(blocks[0][0])


# ---------------------------------------------------------------------------------------------
# The decoder's cache of blocks that left the table unchanged


def test_unchanged_block_cache_sees_table_changes() -> None:
    """A cached indexed-only block decodes against the new table once the table changes."""
    decoder = Decoder()
    decoder.decode(_literal(b"k", b"old"))
    assert decoder.decode(H("be")) == [(b"k", b"old")]
    assert decoder.decode(H("be")) == [(b"k", b"old")]  # now served from the cache
    decoder.decode(_literal(b"k", b"new"))
    assert decoder.decode(H("be")) == [(b"k", b"new")]
    assert decoder.decode(H("bf")) == [(b"k", b"old")]
    decoder.decode(H("20"))  # size update to 0 empties the table
    with pytest.raises(HPACKError):
        decoder.decode(H("be"))


def test_blocks_that_insert_are_applied_every_time() -> None:
    """The same inserting block twice inserts twice (it must never come from the cache)."""
    decoder = Decoder()
    block = _literal(b"k", b"v")
    decoder.decode(block)
    decoder.decode(block)
    assert decoder.dynamic_table() == [(b"k", b"v"), (b"k", b"v")]
    assert decoder.table_bytes == 2 * (1 + 1 + 32)


def test_cached_result_is_a_fresh_list_and_any_buffer_type_works() -> None:
    """Mutating a returned list does not leak into later results; bytearray/memoryview work."""
    decoder = Decoder()
    first = decoder.decode(H("8286"))
    first.append((b"x", b"y"))
    assert decoder.decode(H("8286")) == [(b":method", b"GET"), (b":scheme", b"http")]
    assert decoder.decode(bytearray(H("8286"))) == [(b":method", b"GET"), (b":scheme", b"http")]
    assert decoder.decode(memoryview(H("0082"))[1:]) == [(b":method", b"GET")]


def test_seeded_garbage_raises_only_hpack_error() -> None:
    """Random and mutated blocks either decode or raise HPACKError, never anything else.

    Mutations of the Appendix C blocks (byte flips, truncations) reach deep into valid
    structure; pure random bytes hit the error paths at the first byte. The table invariant
    (size = sum of entry sizes, within the limit) must hold after every block.
    """
    seed = 20260
    rng = random.Random(seed)
    valid = [H(block) for _, blocks, _, _ in SEQUENCES.values() for block in blocks]
    outcomes = {"decoded": 0, "rejected": 0}
    for case in range(3000):
        if case % 3 == 0:
            block = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        else:
            mutated = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            block = bytes(mutated[: rng.randrange(1, len(mutated) + 1)])
        decoder = Decoder(256)
        try:
            decoder.decode(block)
            outcomes["decoded"] += 1
        except HPACKError:
            outcomes["rejected"] += 1
        sizes = sum(len(n) + len(v) + 32 for n, v in decoder.dynamic_table())
        assert sizes == decoder.table_bytes <= decoder.table_bytes_max, f"seed={seed} {case=}"
    # Both paths were exercised in earnest, not just the first-byte rejections.
    assert min(outcomes.values()) > 100, f"seed={seed} {outcomes}"


def test_failed_block_drops_cached_blocks() -> None:
    """A block that inserts and then fails leaves no cached result for the old table."""
    decoder = Decoder()
    decoder.decode(_literal(b"k", b"old"))
    assert decoder.decode(H("be")) == [(b"k", b"old")]  # cached for this table
    with pytest.raises(HPACKError):
        decoder.decode(_literal(b"k", b"new") + H("80"))  # inserts, then index 0
    assert decoder.decode(H("be")) == [(b"k", b"new")]
