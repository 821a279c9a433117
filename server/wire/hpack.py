"""HPACK (RFC 7541): header compression for petra's HTTP/2 gRPC transport.

Theory of operation
-------------------
A header block is a sequence of representations, each told apart by its first bits:

    1xxxxxxx  indexed field            (7-bit index)
    01xxxxxx  literal, incremental     (6-bit name index, 0 = literal name) -> table insert
    001xxxxx  dynamic table size update (5-bit size; only before the first field of a block)
    0001xxxx  literal, never indexed   (4-bit name index)
    0000xxxx  literal, without indexing (4-bit name index)

Indexes 1..61 name the static table, 62.. the dynamic table (62 = newest). The dynamic table
is a FIFO bounded by size, where an entry costs len(name) + len(value) + 32 bytes; inserting
evicts the oldest entries until the new one fits (an entry larger than the whole table just
empties it).

`Decoder` keeps one connection's dynamic table and is strict: anything malformed raises
`HPACKError`, which the connection turns into a COMPRESSION_ERROR and then stays failed
(a half-applied block leaves the table out of step with the peer, so there is no recovery).

`Encoder` is stateless on purpose: it never touches the dynamic table, so an encoded block
depends only on its headers and the server can cache the blocks it sends on every response.

Huffman strings are decoded by a state machine over whole bytes: the states are the 256
internal nodes of the code tree, and `_DECODE[state | byte]` gives the next state and the
symbols completed by those 8 bits. It is built at import from the code lengths alone (the
RFC 7541 Appendix B code is canonical, so lengths determine the codes). Clients repeat the
same strings on every request, so decoded strings are also kept in a bounded cache.

Each Decoder also remembers the blocks that left its table unchanged (a client's repeat
requests are often only indexed references) and returns their fields without parsing until
the table next changes. grpcio defeats this when a call has a deadline: it sends grpc-timeout,
whose value differs every time, as a literal with indexing.

Thread safety: a Decoder belongs to one connection; the shared string cache relies on single
dict operations (get, set, clear) being atomic under the GIL.
"""

from __future__ import annotations

from collections import deque

__all__ = [
    "HPACKError",
    "Decoder",
    "Encoder",
    "decode_integer",
    "encode_integer",
    "huffman_decode",
    "huffman_encode",
]


class HPACKError(Exception):
    """A malformed header block; the connection must fail with COMPRESSION_ERROR."""


# Integers above this are an implementation limit (RFC 7541 5.1 lets a decoder pick one).
INTEGER_MAX = 2**32
# 2**32 needs at most 5 continuation bytes of 7 bits; a 6th can only be padding.
_CONTINUATION_SHIFT_MAX = 28

# Entry overhead fixed by RFC 7541 4.1.
ENTRY_OVERHEAD_BYTES = 32

# RFC 7541 Appendix A, index 1..61 (slot 0 is unused: index 0 is always an error).
STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b"", b""),
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)
STATIC_TABLE_LEN = len(STATIC_TABLE) - 1
assert STATIC_TABLE_LEN == 61

# The encoder's lookups: a full (name, value) match is one indexed byte; a name match saves
# the name. The first index wins for names listed twice (":method", ":status", ...).
_STATIC_FULL_INDEX: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME_INDEX: dict[bytes, int] = {}
for _index, _entry in enumerate(STATIC_TABLE[1:], start=1):
    _STATIC_FULL_INDEX.setdefault(_entry, _index)
    _STATIC_NAME_INDEX.setdefault(_entry[0], _index)


# ---------------------------------------------------------------------------------------------
# Integers (RFC 7541 5.1)


def encode_integer(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    """`value` in an N-bit prefix, OR-ed into the first byte with `first_byte_flags`."""
    assert 1 <= prefix_bits <= 8 and 0 <= value <= INTEGER_MAX, (value, prefix_bits)
    prefix_max = (1 << prefix_bits) - 1
    assert first_byte_flags & prefix_max == 0, "flags overlap the prefix"
    if value < prefix_max:
        return bytes((first_byte_flags | value,))
    out = bytearray((first_byte_flags | prefix_max,))
    value -= prefix_max
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """The integer whose N-bit prefix is in data[pos] -> (value, position after it)."""
    if pos >= len(data):
        raise HPACKError("header block truncated in an integer")
    prefix_max = (1 << prefix_bits) - 1
    value = data[pos] & prefix_max
    if value < prefix_max:
        return value, pos + 1
    return _decode_integer_tail(data, pos + 1, prefix_max)


def _decode_integer_tail(data: bytes, pos: int, value: int) -> tuple[int, int]:
    """Continuation bytes after a full prefix (whose value is `value`)."""
    end = len(data)
    shift = 0
    while True:
        if pos >= end:
            raise HPACKError("header block truncated in an integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > _CONTINUATION_SHIFT_MAX:
            raise HPACKError("integer encoding too long")
    # A zero last byte after other continuation bytes only pads: a minimal encoder never
    # sends it, and accepting it would let a peer stretch an integer without bound.
    if byte == 0 and shift > 0:
        raise HPACKError("integer encoding not minimal")
    if value > INTEGER_MAX:
        raise HPACKError(f"integer {value} over the limit {INTEGER_MAX}")
    return value, pos


# ---------------------------------------------------------------------------------------------
# Huffman code (RFC 7541 Appendix B)

# fmt: off
# Code length in bits of each symbol 0..255 and EOS (256). The code is canonical: sorted by
# (length, symbol), each code is the previous one plus one, shifted left to its length.
_CODE_LENGTHS_BITS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,  # 0
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,  # 16
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,  # 32
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,  # 48
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  # 64
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,  # 80
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,  # 96
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,  # 112
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,  # 128
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,  # 144
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,  # 160
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,  # 176
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,  # 192
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,  # 208
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,  # 224
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,  # 240
    30,  # 256 = EOS
)
# fmt: on
_EOS = 256


def _canonical_codes(lengths: tuple[int, ...]) -> tuple[int, ...]:
    order = sorted(range(len(lengths)), key=lambda symbol: (lengths[symbol], symbol))
    codes = [0] * len(lengths)
    code = 0
    for rank, symbol in enumerate(order):
        if rank:
            code = (code + 1) << (lengths[symbol] - lengths[order[rank - 1]])
        codes[symbol] = code
    # Invariant of a complete prefix code: the last (longest) code is all ones.
    assert codes[order[-1]] == (1 << lengths[order[-1]]) - 1
    return tuple(codes)


HUFFMAN_CODES = _canonical_codes(_CODE_LENGTHS_BITS)
assert HUFFMAN_CODES[_EOS] == 0x3FFFFFFF and HUFFMAN_CODES[ord("a")] == 0b00011


def huffman_encode(data: bytes) -> bytes:
    """The Huffman encoding of `data`, padded to a byte with the high bits of EOS (ones)."""
    codes = HUFFMAN_CODES
    lengths = _CODE_LENGTHS_BITS
    acc = 0
    bits = 0
    for byte in data:
        acc = (acc << lengths[byte]) | codes[byte]
        bits += lengths[byte]
    pad_bits = -bits % 8
    acc = (acc << pad_bits) | ((1 << pad_bits) - 1)
    return acc.to_bytes((bits + pad_bits) // 8, "big")


def _code_tree() -> list[list[int]]:
    """children[node] = [child for bit 0, child for bit 1]; a leaf is ~symbol (negative)."""
    children: list[list[int]] = [[0, 0]]
    for symbol, (code, length) in enumerate(zip(HUFFMAN_CODES, _CODE_LENGTHS_BITS, strict=True)):
        node = 0
        for shift in range(length - 1, 0, -1):
            bit = (code >> shift) & 1
            if children[node][bit] == 0:
                children.append([0, 0])
                children[node][bit] = len(children) - 1
            node = children[node][bit]
        children[node][code & 1] = ~symbol
    assert len(children) == 256, "257 leaves make 256 internal nodes"
    return children


def _build_decoder() -> tuple[list[tuple[int, bytes]], tuple[bool, ...]]:
    """The byte-at-a-time state machine; states are stored pre-shifted (node << 8).

    Node 256 is a dead state that every invalid input (EOS in the data) falls into and never
    leaves; it is not accepting, so the error surfaces once, at the end, off the hot loop.
    """
    children = _code_tree()
    dead = 256
    # First the 4-bit steps, then each byte as two of them: 16x fewer bit walks at import.
    nibble: list[tuple[int, bytes]] = []
    for node in range(256):
        for chunk in range(16):
            nibble.append(_walk(children, node, chunk, 4))
    nibble.extend([(dead, b"")] * 16)
    table: list[tuple[int, bytes]] = []
    for node in range(257):
        for high in range(16):
            middle, first = nibble[node << 4 | high]
            for low in range(16):
                after, second = nibble[middle << 4 | low]
                table.append((after << 8, first + second if second else first))
    # Accepting end states: the root, or up to 7 one-bits into a code (the padding rule).
    accepting = [False] * 257
    node = 0
    for _ in range(8):
        accepting[node] = True
        node = children[node][1]
    return table, tuple(accepting)


def _walk(children: list[list[int]], node: int, chunk: int, bits: int) -> tuple[int, bytes]:
    emitted = bytearray()
    for shift in range(bits - 1, -1, -1):
        child = children[node][(chunk >> shift) & 1]
        if child >= 0:
            node = child
        elif ~child == _EOS:
            return 256, b""
        else:
            emitted.append(~child)
            node = 0
    return node, bytes(emitted)


_DECODE, _ACCEPTING = _build_decoder()


def huffman_decode(data: bytes) -> bytes:
    """The bytes that Huffman-encoded `data` stands for; HPACKError if it is invalid.

    Invalid means: EOS inside the data, or padding that is longer than 7 bits or not all
    ones (RFC 7541 5.2).
    """
    table = _DECODE
    state = 0
    out = bytearray()
    for byte in data:
        state, emitted = table[state | byte]
        out += emitted
    if not _ACCEPTING[state >> 8]:
        raise HPACKError("invalid Huffman string (EOS, or bad padding)")
    return bytes(out)


# Decoded strings by their encoded bytes. One per process: clients (etcdctl opens a connection
# per command) send the same path, authority and user agent every time. Bounded in entries and
# in the size of what is cached.
_HUFFMAN_CACHE: dict[bytes, bytes] = {}
HUFFMAN_CACHE_ENTRIES_MAX = 1024
HUFFMAN_CACHE_STRING_BYTES_MAX = 256


def _huffman_decode_cached(data: bytes) -> bytes:
    decoded = _HUFFMAN_CACHE.get(data)
    if decoded is None:
        decoded = huffman_decode(data)
        if len(data) <= HUFFMAN_CACHE_STRING_BYTES_MAX:
            if len(_HUFFMAN_CACHE) >= HUFFMAN_CACHE_ENTRIES_MAX:
                # Start over rather than evict one by one: clear() is a single atomic dict
                # operation, and the hot strings come back on their next use.
                _HUFFMAN_CACHE.clear()
            _HUFFMAN_CACHE[data] = decoded
    return decoded


# ---------------------------------------------------------------------------------------------
# Decoder

# Bounds on each decoder's cache of blocks that left the table unchanged: at most 8 KiB of
# keys per connection; a client repeats one block per method it calls.
UNCHANGED_BLOCKS_MAX = 16
UNCHANGED_BLOCK_BYTES_MAX = 512


class Decoder:
    """One connection's receiving side: its dynamic table and the rules for reading blocks."""

    def __init__(self, max_table_size: int = 4096) -> None:
        assert max_table_size >= 0
        # Our SETTINGS_HEADER_TABLE_SIZE: the peer may size its table up to this, no more.
        self.max_allowed_table_size = max_table_size
        # Newest entry first, so dynamic index 62 + i is self._entries[i].
        self._entries: deque[tuple[bytes, bytes]] = deque()
        # Invariant: _table_bytes == sum of entry sizes <= _table_bytes_max.
        self._table_bytes = 0
        self._table_bytes_max = max_table_size
        # Counts every change to the table (insert, resize); a block that leaves it unchanged
        # decodes the same way until the next change.
        self._table_changes = 0
        # Blocks that did not change the table -> their headers, valid for the current table
        # only (emptied on any change). A client's repeat requests are such blocks: indexed
        # references to what its first request inserted.
        self._unchanged_blocks: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}

    @property
    def table_bytes(self) -> int:
        """The dynamic table's current size by RFC 7541 accounting."""
        return self._table_bytes

    @property
    def table_bytes_max(self) -> int:
        """The dynamic table's size limit, as last set by the peer (or the initial value)."""
        return self._table_bytes_max

    def dynamic_table(self) -> list[tuple[bytes, bytes]]:
        """The dynamic table's entries, newest (index 62) first."""
        return list(self._entries)

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """One complete header block -> its (name, value) pairs in order.

        Any malformed input raises HPACKError; the table may then be half-updated, which is
        why the connection must fail.
        """
        if type(block) is not bytes:
            block = bytes(block)  # joined frames may come as a bytearray or memoryview
        cached = self._unchanged_blocks.get(block)
        if cached is not None:
            return list(cached)
        changes_before = self._table_changes
        try:
            headers = self._decode_block(block)
        except HPACKError:
            # The table may be half-updated: nothing cached for the old one may be served.
            self._unchanged_blocks.clear()
            raise
        if self._table_changes != changes_before:
            self._unchanged_blocks.clear()
        elif len(block) <= UNCHANGED_BLOCK_BYTES_MAX:
            if len(self._unchanged_blocks) >= UNCHANGED_BLOCKS_MAX:
                self._unchanged_blocks.clear()
            self._unchanged_blocks[block] = tuple(headers)
        return headers

    def _decode_block(self, block: bytes) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        append = headers.append
        entries = self._entries
        end = len(block)
        pos = 0
        updates_allowed = True
        while pos < end:
            byte = block[pos]
            if byte & 0x80:
                # The hot path: after the first request, a client's fields are mostly these.
                index = byte & 0x7F
                pos += 1
                if index == 0x7F:
                    index, pos = _decode_integer_tail(block, pos, 0x7F)
                if 0 < index <= STATIC_TABLE_LEN:
                    append(STATIC_TABLE[index])
                elif index == 0 or index - 62 >= len(entries):
                    raise HPACKError(f"index {index} out of range")
                else:
                    append(entries[index - 62])
            elif byte & 0x40:
                name, value, pos = self._read_literal(block, pos, 0x3F)
                self._insert(name, value)
                append((name, value))
            elif byte & 0x20:
                if not updates_allowed:
                    raise HPACKError("dynamic table size update after a header field")
                size, pos = decode_integer(block, pos, 5)
                self._resize(size)
                continue
            else:
                # Without indexing (0000) and never indexed (0001) read alike; "never" only
                # binds intermediaries that re-encode, which we never do.
                name, value, pos = self._read_literal(block, pos, 0x0F)
                append((name, value))
            updates_allowed = False
        return headers

    def _read_literal(self, block: bytes, pos: int, prefix_max: int) -> tuple[bytes, bytes, int]:
        """A literal field whose name index sits in a prefix of `prefix_max` (0x3F or 0x0F)."""
        index = block[pos] & prefix_max
        if index == prefix_max:
            index, pos = _decode_integer_tail(block, pos + 1, prefix_max)
        else:
            pos += 1
        if index == 0:
            name, pos = _read_string(block, pos)
        elif index <= STATIC_TABLE_LEN:
            name = STATIC_TABLE[index][0]
        else:
            name = self._dynamic_name(index)
        value, pos = _read_string(block, pos)
        return name, value, pos

    def _dynamic_name(self, index: int) -> bytes:
        if index - 62 >= len(self._entries):
            raise HPACKError(f"name index {index} out of range")
        return self._entries[index - 62][0]

    def _insert(self, name: bytes, value: bytes) -> None:
        self._table_changes += 1
        size = len(name) + len(value) + ENTRY_OVERHEAD_BYTES
        if size > self._table_bytes_max:
            # RFC 7541 4.4: not an error; the table just ends up empty.
            self._entries.clear()
            self._table_bytes = 0
            return
        self._evict_to(self._table_bytes_max - size)
        self._entries.appendleft((name, value))
        self._table_bytes += size

    def _resize(self, size: int) -> None:
        if size > self.max_allowed_table_size:
            raise HPACKError(
                f"dynamic table size update to {size} over the limit {self.max_allowed_table_size}"
            )
        self._table_changes += 1
        self._table_bytes_max = size
        self._evict_to(size)

    def _evict_to(self, limit_bytes: int) -> None:
        entries = self._entries
        while self._table_bytes > limit_bytes:
            name, value = entries.pop()
            self._table_bytes -= len(name) + len(value) + ENTRY_OVERHEAD_BYTES
        assert self._table_bytes >= 0


def _read_string(block: bytes, pos: int) -> tuple[bytes, int]:
    """A string literal at block[pos] (H flag + 7-bit length, then the octets)."""
    if pos >= len(block):
        raise HPACKError("header block truncated before a string")
    first = block[pos]
    length = first & 0x7F
    if length == 0x7F:
        length, pos = _decode_integer_tail(block, pos + 1, 0x7F)
    else:
        pos += 1
    stop = pos + length
    if stop > len(block):
        raise HPACKError(f"string of {length} bytes runs past the end of the header block")
    raw = block[pos:stop]
    if first & 0x80:
        decoded = _HUFFMAN_CACHE.get(raw)
        return (_huffman_decode_cached(raw) if decoded is None else decoded), stop
    return raw, stop


# ---------------------------------------------------------------------------------------------
# Encoder


class Encoder:
    """Stateless encoder: indexed static matches, otherwise literals without indexing.

    No dynamic table and no Huffman, so the output depends only on the headers (cacheable),
    and the peer's table never needs a size update from us.
    """

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        out = bytearray()
        for name, value in headers:
            field = _STATIC_FIELD_BYTES.get((name, value))
            if field is not None:
                out += field
                continue
            name_bytes = _STATIC_NAME_BYTES.get(name)
            if name_bytes is None:
                out.append(0x00)
                out += _string_length(len(name))
                out += name
            else:
                out += name_bytes
            out += _string_length(len(value))
            out += value
        return bytes(out)


def _string_length(length: int) -> bytes:
    return bytes((length,)) if length < 0x7F else encode_integer(length, 7)


# The encoder's representations, precomputed: a full static match is one indexed byte; a
# static name is a literal-without-indexing prefix carrying its index.
_STATIC_FIELD_BYTES = {
    field: encode_integer(index, 7, 0x80) for field, index in _STATIC_FULL_INDEX.items()
}
_STATIC_NAME_BYTES = {name: encode_integer(index, 4) for name, index in _STATIC_NAME_INDEX.items()}
