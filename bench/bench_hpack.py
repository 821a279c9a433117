"""HPACK micro-benchmark: µs per decode of the header blocks a gRPC client sends.

    python -m bench.bench_hpack [--iterations 20000]

Blocks are shaped like grpc-go's and grpcio's: the first request on a connection sends
:method POST and :scheme http as static indexes and every other field as a Huffman literal
with incremental indexing; later requests send those fields as 1-byte dynamic-table indexes.
Prints, as the median of 5 rounds:
- (a) first-request block on a fresh Decoder, Huffman string cache cold (cleared each time);
- (a') the same with the cache warm (a new connection from a client seen before: etcdctl
  opens one per command);
- (b) repeat block of indexed fields on a Decoder that has seen (a) (a hit in the decoder's
  cache of blocks that left the table unchanged), and (b') the same block parsed field by field;
- (c) a repeat block that also carries a fresh grpc-timeout literal with indexing, as grpcio
  sends it (no Huffman; the table changes on every request, so (b)'s cache never hits);
- the stateless Encoder on a typical response header and trailer block.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from server.wire import hpack
from server.wire.hpack import Decoder, Encoder, encode_integer, huffman_encode

ROUNDS = 5

# Name index in the static table (0 = literal name) and value of each header after the two
# static ones (:method POST = 3, :scheme http = 6).
LITERAL_FIELDS = [
    (4, b":path", b"/etcdserverpb.KV/Put"),
    (1, b":authority", b"127.0.0.1:2379"),
    (31, b"content-type", b"application/grpc"),
    (58, b"user-agent", b"grpc-go/1.59.0"),
    (0, b"te", b"trailers"),
    (0, b"grpc-timeout", b"4999m"),
]


def huffman_string(data: bytes) -> bytes:
    encoded = huffman_encode(data)
    return encode_integer(len(encoded), 7, 0x80) + encoded


def first_request_block() -> bytes:
    block = bytearray(b"\x83\x86")
    for name_index, name, value in LITERAL_FIELDS:
        block += encode_integer(name_index, 6, 0x40)
        if name_index == 0:
            block += huffman_string(name)
        block += huffman_string(value)
    return bytes(block)


def repeat_block() -> bytes:
    # Newest entry is index 62, so the first literal inserted is now the oldest.
    count = len(LITERAL_FIELDS)
    return b"\x83\x86" + bytes(0x80 | (62 + count - 1 - i) for i in range(count))


def median_us(run: Callable[[], object], iterations: int) -> float:
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(iterations):
            run()
        rounds.append((time.perf_counter_ns() - start) / iterations / 1000)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args()
    first, repeat = first_request_block(), repeat_block()
    expected = [(b":method", b"POST"), (b":scheme", b"http")]
    expected += [(name, value) for _, name, value in LITERAL_FIELDS]
    connection = Decoder()
    assert connection.decode(first) == expected and connection.decode(repeat) == expected

    def cold() -> object:
        hpack._HUFFMAN_CACHE.clear()
        return Decoder().decode(first)

    encoder = Encoder()
    response = [(b":status", b"200"), (b"content-type", b"application/grpc")]
    trailers = [(b"grpc-status", b"0"), (b"grpc-message", b"")]
    print(f"first-request block: {len(first)} bytes, repeat block: {len(repeat)} bytes")
    print(f"(a)  first request, cache cold : {median_us(cold, args.iterations):6.2f} µs/decode")
    warm = median_us(lambda: Decoder().decode(first), args.iterations)
    print(f"(a') first request, cache warm : {warm:6.2f} µs/decode")
    repeat_us = median_us(lambda: connection.decode(repeat), args.iterations)
    print(f"(b)  repeat, indexed fields    : {repeat_us:6.2f} µs/decode")
    # The same block parsed field by field, as when the table changed since it was last seen.
    parse_us = median_us(lambda: connection._decode_block(repeat), args.iterations)
    print(f"(b') repeat, block cache miss  : {parse_us:6.2f} µs/decode")
    # grpcio's real shape: a repeat request re-sends grpc-timeout (its value changes every call)
    # as a raw literal with indexing, so the table changes each time and the cache never hits.
    timeout_block = repeat[:-1] + b"\x40\x0cgrpc-timeout\x055010m" + repeat[-1:]
    churn_us = median_us(lambda: connection.decode(timeout_block), args.iterations)
    print(f"(c)  repeat + new grpc-timeout : {churn_us:6.2f} µs/decode")
    encode_us = median_us(lambda: encoder.encode(response), args.iterations)
    trailers_us = median_us(lambda: encoder.encode(trailers), args.iterations)
    print(f"encode response headers        : {encode_us:6.2f} µs")
    print(f"encode trailers                : {trailers_us:6.2f} µs")


if __name__ == "__main__":
    main()
