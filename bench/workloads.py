"""What each load workload sends: request bytes built from a seeded generator, no I/O.

Keys follow etcd's benchmark tool: a key is the zig-zag varint of a number in
[0, key_space_size), written into a zeroed buffer of key_size bytes, so the same flags give
the same key set as `benchmark put`.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

from client import wire

UNARY_WORKLOADS = ("put", "range", "txn-put", "txn-mixed")
STREAM_WORKLOADS = ("watch", "watch-latency", "lease-keepalive")
WORKLOADS = UNARY_WORKLOADS + STREAM_WORKLOADS


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """Everything a worker process needs; picklable. Counts are for the whole run."""

    workload: str
    endpoints: tuple[str, ...]
    conns: int = 1
    clients: int = 1
    total: int = 10000
    duration_s: float = 0.0  # > 0: run for this long instead of `total` requests
    rate: float = 0.0  # requests/s over the whole run; 0 = unlimited
    key_size: int = 8
    val_size: int = 8
    key_space_size: int = 1
    sequential_keys: bool = False
    serializable: bool = False
    range_key: bytes = b"foo"
    range_end: bytes = b""
    range_limit: int = 0
    txn_ops: int = 1
    rw_ratio: float = 1.0  # reads per write, txn-mixed
    streams: int = 10
    watchers_per_stream: int = 10
    watched_key_total: int = 1
    put_total: int = 1000
    put_rate: float = 0.0
    lease_ttl_s: int = 100
    keepalive_stream: bool = False  # lease-keepalive: reuse one stream per client
    timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    seed: int = 1
    procs: int = 1
    extra: dict[str, str] = field(default_factory=dict)


def benchmark_key(n: int, key_size: int) -> bytes:
    """etcd benchmark's key: binary.PutVarint(zeroed [key_size]byte, n) (zig-zag varint)."""
    zz = (n << 1) ^ (n >> 63)
    raw = wire.varint(zz)
    if len(raw) >= key_size:
        return raw[:key_size]
    return raw + bytes(key_size - len(raw))


def random_value(rng: random.Random, size: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(size))


class KeyPicker:
    """The key number of each request: sequential (i mod space, interleaved over workers)
    or uniformly random."""

    def __init__(self, spec: LoadSpec, worker: int, rng: random.Random) -> None:
        self.space = max(1, spec.key_space_size)
        self.key_size = spec.key_size
        self.sequential = spec.sequential_keys
        self.rng = rng
        self.next_n = worker
        self.step = max(1, spec.procs)

    def number(self) -> int:
        if self.sequential:
            n = self.next_n % self.space
            self.next_n += self.step
            return n
        return self.rng.randrange(self.space)

    def key(self) -> bytes:
        return benchmark_key(self.number(), self.key_size)


class PutRequests:
    """Put requests: the value field is encoded once; whole requests are cached per key
    number (up to CACHE_MAX of them), so the hot path is one dict lookup."""

    CACHE_MAX = 1 << 17

    def __init__(self, spec: LoadSpec, worker: int, rng: random.Random) -> None:
        self.keys = KeyPicker(spec, worker, rng)
        self.value_field = wire.field_bytes(2, random_value(rng, spec.val_size))
        self.cache: dict[int, bytes] = {}

    def next(self) -> bytes:
        n = self.keys.number()
        req = self.cache.get(n)
        if req is None:
            req = wire.field_bytes(1, benchmark_key(n, self.keys.key_size)) + self.value_field
            if len(self.cache) < self.CACHE_MAX:
                self.cache[n] = req
        return req


class TxnPutRequests:
    """Txns of txn_ops puts on distinct keys (etcd refuses duplicate keys in one txn)."""

    def __init__(self, spec: LoadSpec, worker: int, rng: random.Random) -> None:
        self.puts = PutRequests(spec, worker, rng)
        self.ops = max(1, min(spec.txn_ops, spec.key_space_size))

    def next(self) -> bytes:
        ops: dict[bytes, bytes] = {}
        while len(ops) < self.ops:
            put = self.puts.next()
            ops[put] = wire.op_put(put)
        return wire.txn_request(list(ops.values()))


class MixedTxnRequests:
    """txn-mixed: each request is a read txn (one range) with probability rw/(rw+1), else a
    write txn (one put). `next` returns (is_read, request bytes)."""

    def __init__(self, spec: LoadSpec, worker: int, rng: random.Random) -> None:
        self.rng = rng
        self.read_probability = spec.rw_ratio / (spec.rw_ratio + 1.0)
        self.puts = PutRequests(spec, worker, rng)
        rng_req = wire.range_request(
            spec.range_key,
            spec.range_end,
            serializable=spec.serializable,
            limit=spec.range_limit,
        )
        self.read = wire.txn_request([wire.op_range(rng_req)])

    def next(self) -> tuple[bool, bytes]:
        if self.rng.random() < self.read_probability:
            return True, self.read
        return False, wire.txn_request([wire.op_put(self.puts.next())])


def stamped_value(sent_ns: int, size: int) -> bytes:
    """A value that carries its put's send time (monotonic ns), so any process that receives
    the watch event can compute put → event latency."""
    return struct.pack("<q", sent_ns) + bytes(max(0, size - 8))


def value_stamp_ns(value: bytes) -> int:
    return int(struct.unpack_from("<q", value)[0])


def watched_keys(spec: LoadSpec) -> list[bytes]:
    """The keys watchers watch; the same list in every worker (seeded by spec.seed)."""
    rng = random.Random(spec.seed)
    space = max(1, spec.key_space_size)
    keys = []
    for i in range(max(1, spec.watched_key_total)):
        n = i % space if spec.sequential_keys else rng.randrange(space)
        keys.append(benchmark_key(n, spec.key_size))
    return keys


def split(total: int, parts: int, index: int) -> int:
    """Share `index` of `total` split over `parts` as evenly as possible."""
    return total // parts + (1 if index < total % parts else 0)
