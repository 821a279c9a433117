"""Harness for the conformance tests of petra's own gRPC server (server/wire/).

Theory of operation: every server under test (a grpc.aio server, the reference, or petra's
`server.wire.server.Server`) runs in this process on a background thread with its own event
loop (`LoopThread`), built by one factory (`start_server`) from the same handlers (`EchoService`
and two etcd protobuf servicers). Tests talk to it with the real grpcio client (sync and aio)
or with `RawConn`, a raw socket speaking HTTP/2 by hand: a frame writer/reader and an HPACK
encoder that only emits literal, non-Huffman fields (every decoder must accept those). A test
parametrized over both server kinds states grpc.aio's behaviour as the spec, so a difference
shows up as a failure on petra's server only.

Handlers report to a `Probe`: thread-safe events the test thread waits on (a handler started,
its `finally` ran, it saw `CancelledError`) and counters (bytes a stream has produced).
Nothing sleeps: tests wait on a condition with a deadline (`tests.nodes.wait_for`).

Run as `python -m tests.wire_harness --kind petra` to serve the echo service from a child
process: it prints the port on stdout and stops (grace 1 s) when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc

from api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from api.mvccpb import kv_pb2

T = TypeVar("T")

SERVICE = "wiretest.Echo"
KINDS = ("aio", "petra")
CALL_TIMEOUT_S = 20.0


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


def pattern(seed: int, size_bytes: int) -> bytes:
    """Deterministic bytes for content checks: the same seed gives the same bytes."""
    return random.Random(seed).randbytes(size_bytes)


def stream_pattern(count: int, size_bytes: int, seed: int) -> bytes:
    """The bytes a stream of `stream_spec(count, size_bytes, seed)` carries, concatenated."""
    rng = random.Random(seed)
    return b"".join(rng.randbytes(size_bytes) for _ in range(count))


# -- the event loop thread -------------------------------------------------------------------------


class LoopThread:
    """An asyncio loop on a daemon thread; `run` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # What the loop would otherwise only log: exceptions nobody retrieved, callbacks that
        # raised. A server that leaks these has a bug even if its clients see nothing.
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        self._thread = threading.Thread(target=self._main, name="wire-server-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Cancel whatever a failed test left behind so the loop closes cleanly.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = CALL_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        assert not self._thread.is_alive(), "server loop thread did not stop"


# -- what handlers report --------------------------------------------------------------------------


class Probe:
    """Signals from handlers (on the server loop) to the test thread, keyed by a tag."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._releases: dict[str, asyncio.Event] = {}
        self.values: dict[str, Any] = {}
        self.produced_bytes = 0
        self.last_produce_s = 0.0

    def event(self, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def signal(self, name: str, value: Any = True) -> None:
        self.values[name] = value
        self.event(name).set()

    def wait(self, name: str, timeout_s: float = 10.0) -> Any:
        assert self.event(name).wait(timeout_s), f"timed out after {timeout_s} s on {name!r}"
        return self.values.get(name)

    def seen(self, name: str) -> bool:
        return self.event(name).is_set()

    def _release_event(self, tag: str) -> asyncio.Event:
        return self._releases.setdefault(tag, asyncio.Event())

    async def until_released(self, tag: str) -> None:
        await self._release_event(tag).wait()

    def release(self, tag: str) -> None:
        self.loop.call_soon_threadsafe(lambda: self._release_event(tag).set())

    def note_produced(self, size_bytes: int) -> None:
        self.produced_bytes += size_bytes
        self.last_produce_s = time.monotonic()


# -- the echo service ------------------------------------------------------------------------------

STREAM_SPEC = struct.Struct(">IIQ")  # chunk count, chunk size in bytes, pattern seed


def stream_spec(count: int, size_bytes: int, seed: int) -> bytes:
    return STREAM_SPEC.pack(count, size_bytes, seed)


def stream_chunks(spec: bytes) -> tuple[int, int, int]:
    count, size_bytes, seed = STREAM_SPEC.unpack(spec)
    return count, size_bytes, seed


class EchoService:
    """Handlers for every behaviour under test; identity (bytes) serializers throughout."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def unary(self, request: bytes, context: Any) -> bytes:
        return request

    async def block(self, request: bytes, context: Any) -> bytes:
        """Waits until the test releases `request` (a tag); reports start, cancel, finally."""
        tag = request.decode()
        self.probe.signal(f"started:{tag}")
        try:
            await self.probe.until_released(tag)
            return b"released:" + request
        except BaseException as exc:
            self.probe.signal(f"cancelled:{tag}", type(exc).__name__)
            raise
        finally:
            self.probe.signal(f"finally:{tag}")

    async def stream_yield(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        count, size_bytes, seed = stream_chunks(request)
        rng = random.Random(seed)
        tag = f"stream:{seed}"
        self.probe.signal(f"started:{tag}")
        try:
            for _ in range(count):
                chunk = rng.randbytes(size_bytes)
                yield chunk
                self.probe.note_produced(len(chunk))
        except BaseException as exc:
            self.probe.signal(f"cancelled:{tag}", type(exc).__name__)
            raise
        finally:
            self.probe.signal(f"finally:{tag}")

    async def stream_write(self, request: bytes, context: Any) -> None:
        count, size_bytes, seed = stream_chunks(request)
        rng = random.Random(seed)
        for _ in range(count):
            await context.write(rng.randbytes(size_bytes))

    async def collect_iter(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self.probe.signal("started:collect")
        try:
            parts = [part async for part in requests]
            return b"".join(parts)
        except BaseException as exc:
            self.probe.signal("cancelled:collect", type(exc).__name__)
            raise
        finally:
            self.probe.signal("finally:collect")

    async def collect_read(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        parts = []
        while (part := await context.read()) is not grpc.aio.EOF:
            parts.append(part)
        return b"".join(parts)

    async def bidi_iter(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for part in requests:
            yield part[::-1]

    async def bidi_rw(self, requests: AsyncIterator[bytes], context: Any) -> None:
        while (part := await context.read()) is not grpc.aio.EOF:
            await context.write(part[::-1])

    async def abort(self, request: bytes, context: Any) -> bytes:
        spec = json.loads(request)
        await context.abort(getattr(grpc.StatusCode, spec["code"]), spec["details"])
        raise AssertionError("abort returned")

    async def raise_value_error(self, request: bytes, context: Any) -> bytes:
        raise ValueError("boom")

    async def stream_then_fail(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        """Yields two messages, then aborts (request b"abort") or raises ValueError."""
        yield b"one"
        yield b"two"
        if request == b"abort":
            context.set_trailing_metadata((("x-why", "stopped"),))
            await context.abort(grpc.StatusCode.DATA_LOSS, "after two")
        raise ValueError("mid-stream")

    async def abort_with_trailers(self, request: bytes, context: Any) -> bytes:
        await context.abort(
            grpc.StatusCode.ABORTED, "with trailers", (("x-reason", "r1"), ("x-r-bin", b"\x07"))
        )
        raise AssertionError("abort returned")

    async def early_bidi(
        self, requests: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[bytes]:
        """Answers the first request and returns without reading the rest."""
        async for part in requests:
            yield b"first:" + part
            return

    async def wrong_type(self, request: bytes, context: Any) -> Any:
        return "not bytes"

    async def metadata(self, request: bytes, context: Any) -> bytes:
        def show(value: str | bytes) -> Any:
            return {"bytes": value.hex()} if isinstance(value, bytes) else value

        return json.dumps(
            {
                "metadata": [[key, show(value)] for key, value in context.invocation_metadata()],
                "peer": context.peer(),
                "time_remaining": context.time_remaining(),
                "cancelled": context.cancelled(),
                "done": context.done(),
            }
        ).encode()

    async def trailing(self, request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata((("x-trail", "t1"), ("x-trail-bin", b"\x00\x01\xff")))
        return b"ok"

    async def set_code(self, request: bytes, context: Any) -> bytes:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("nothing here")
        return b""

    async def done_callback(self, request: bytes, context: Any) -> bytes:
        context.add_done_callback(lambda ctx: self.probe.signal("done-callback", ctx.done()))
        return b"ok"

    def handler(self) -> grpc.GenericRpcHandler:
        unary = grpc.unary_unary_rpc_method_handler
        handlers = {
            "Unary": unary(self.unary),
            "Block": unary(self.block),
            "StreamYield": grpc.unary_stream_rpc_method_handler(self.stream_yield),
            "StreamWrite": grpc.unary_stream_rpc_method_handler(self.stream_write),
            "CollectIter": grpc.stream_unary_rpc_method_handler(self.collect_iter),
            "CollectRead": grpc.stream_unary_rpc_method_handler(self.collect_read),
            "BidiIter": grpc.stream_stream_rpc_method_handler(self.bidi_iter),
            "BidiRW": grpc.stream_stream_rpc_method_handler(self.bidi_rw),
            "Abort": unary(self.abort),
            "Raise": unary(self.raise_value_error),
            "StreamThenFail": grpc.unary_stream_rpc_method_handler(self.stream_then_fail),
            "AbortWithTrailers": unary(self.abort_with_trailers),
            "EarlyBidi": grpc.stream_stream_rpc_method_handler(self.early_bidi),
            "BadSerialize": unary(self.wrong_type, response_serializer=_fail_serialize),
            "BadDeserialize": unary(self.unary, request_deserializer=_fail_deserialize),
            "Metadata": unary(self.metadata),
            "Trailing": unary(self.trailing),
            "SetCode": unary(self.set_code),
            "DoneCallback": unary(self.done_callback),
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _fail_serialize(message: Any) -> bytes:
    raise TypeError("cannot serialize")


def _fail_deserialize(data: bytes) -> Any:
    raise ValueError("cannot parse")


class KVServicer(rpc_pb2_grpc.KVServicer):
    """etcd's KV service over a dict: real protobufs through the generated registration."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.revision = 1

    async def Put(self, request: rpc_pb2.PutRequest, context: Any) -> rpc_pb2.PutResponse:  # noqa: N802
        self.data[request.key] = request.value
        self.revision += 1
        return rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=self.revision))

    async def Range(self, request: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:  # noqa: N802
        header = rpc_pb2.ResponseHeader(revision=self.revision)
        if request.key.startswith(b"abort:"):
            await context.abort(grpc.StatusCode.NOT_FOUND, request.key[6:].decode())
        if request.key not in self.data:
            return rpc_pb2.RangeResponse(header=header)
        kv = kv_pb2.KeyValue(key=request.key, value=self.data[request.key])
        return rpc_pb2.RangeResponse(header=header, kvs=[kv], count=1)


class WatchServicer(rpc_pb2_grpc.WatchServicer):
    """Answers each create request with a created response carrying the asked watch id."""

    async def Watch(self, requests: AsyncIterator[rpc_pb2.WatchRequest], context: Any) -> Any:  # noqa: N802
        async for request in requests:
            watch_id = request.create_request.watch_id
            yield rpc_pb2.WatchResponse(watch_id=watch_id, created=True)


# -- the servers -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Running:
    kind: str
    server: Any
    port: int
    probe: Probe
    loop: LoopThread

    def stop(self, grace_s: float | None = 0) -> None:
        self.loop.run(self.server.stop(grace_s), timeout_s=30)


async def _build(
    kind: str,
    probe: Probe,
    max_receive_bytes: int,
    max_send_bytes: int,
    on_request: Callable[[str], None] | None,
    on_unary_done: Callable[[str, float], None] | None,
    http1: Callable[[bytes, bytes], Awaitable[bytes]] | None,
) -> tuple[Any, int]:
    if kind == "aio":
        assert on_request is None and on_unary_done is None and http1 is None, "petra only"
        options = [
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", max_send_bytes),
        ]
        server: Any = grpc.aio.server(options=options)
    else:
        from server.wire.server import Server

        server = Server(
            max_receive_message_length=max_receive_bytes,
            max_send_message_length=max_send_bytes,
            on_request=on_request,
            on_unary_done=on_unary_done,
            http1=http1,
        )
    server.add_generic_rpc_handlers((EchoService(probe).handler(),))
    rpc_pb2_grpc.add_KVServicer_to_server(KVServicer(), server)
    rpc_pb2_grpc.add_WatchServicer_to_server(WatchServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0, f"{kind}: add_insecure_port returned {port}"
    await server.start()
    return server, port


def start_server(
    kind: str,
    loop: LoopThread,
    max_receive_bytes: int = 4 * 1024 * 1024,
    max_send_bytes: int = 2**31 - 1,
    on_request: Callable[[str], None] | None = None,
    on_unary_done: Callable[[str, float], None] | None = None,
    http1: Callable[[bytes, bytes], Awaitable[bytes]] | None = None,
) -> Running:
    """Builds and starts a server of `kind` ("aio" or "petra") on `loop`."""
    probe = Probe(loop.loop)
    server, port = loop.run(
        _build(kind, probe, max_receive_bytes, max_send_bytes, on_request, on_unary_done, http1)
    )
    return Running(kind, server, port, probe, loop)


# -- a raw HTTP/2 client ---------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
CONTINUATION = 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 4, 5, 6
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 0x1, 0x3, 0x5, 0x6
FRAME_HEAD = struct.Struct(">HBBBI")  # length as 16 + 8 bits, type, flags, stream id


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    type: int
    flags: int
    stream_id: int
    payload: bytes


def frame(type_: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return FRAME_HEAD.pack(length >> 8, length & 0xFF, type_, flags, stream_id) + payload


def data_frames(stream_id: int, payload: bytes, end_stream: bool = True) -> bytes:
    """`payload` as DATA frames of at most the default 16,384 bytes (the caller keeps within
    the peer's flow-control windows: 65,535 bytes until it sends WINDOW_UPDATE)."""
    chunks = [payload[i : i + 16384] for i in range(0, len(payload), 16384)] or [b""]
    frames = [frame(DATA, 0, stream_id, chunk) for chunk in chunks[:-1]]
    frames.append(frame(DATA, END_STREAM if end_stream else 0, stream_id, chunks[-1]))
    return b"".join(frames)


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(headers: list[tuple[str, str]]) -> bytes:
    """HPACK block of literal fields without indexing, new names, no Huffman (RFC 7541 6.2.2)."""
    out = bytearray()
    for name, value in headers:
        out.append(0x00)
        for text in (name.encode(), value.encode()):
            out += _hpack_int(len(text), 7) + text
    return bytes(out)


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def request_headers(port: int, path: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


class RawConn:
    """A socket speaking HTTP/2 by hand; reads are bounded by a deadline."""

    def __init__(self, port: int, timeout_s: float = 10.0) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self._buffer = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def start(self) -> None:
        """The client preface and an empty SETTINGS frame."""
        self.send(PREFACE + frame(SETTINGS, 0, 0))

    def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return False
            if not chunk:
                return False
            self._buffer += chunk
        return True

    def read_frame(self) -> Frame | None:
        """The next frame, or None at EOF; `socket.timeout` when nothing comes in time."""
        if not self._fill(9):
            return None
        high, low, type_, flags, stream_id = FRAME_HEAD.unpack(self._buffer[:9])
        length = (high << 8) | low
        if not self._fill(9 + length):
            return None
        payload = bytes(self._buffer[9 : 9 + length])
        del self._buffer[: 9 + length]
        return Frame(type_, flags, stream_id & 0x7FFFFFFF, payload)

    def read_until(self, predicate: Callable[[Frame], bool]) -> tuple[Frame | None, list[Frame]]:
        """Reads (ACKing the server's SETTINGS and PINGs) until a frame matches or the server
        closes."""
        seen = []
        while (got := self.read_frame()) is not None:
            seen.append(got)
            if got.type == SETTINGS and not got.flags & ACK:
                self.send(frame(SETTINGS, ACK, 0))
            elif got.type == PING and not got.flags & ACK:
                self.send(frame(PING, ACK, 0, got.payload))
            if predicate(got):
                return got, seen
        return None, seen

    def read_stream_end(self, stream_id: int) -> tuple[Frame | None, list[Frame]]:
        """read_until the stream's last frame: its RST_STREAM or a frame with END_STREAM."""
        return self.read_until(
            lambda f: (
                f.stream_id == stream_id and (f.type == RST_STREAM or bool(f.flags & END_STREAM))
            )
        )

    def read_all(self) -> bytes:
        """Every byte until the server closes."""
        while self._fill(len(self._buffer) + 1):
            pass
        return bytes(self._buffer)

    def goaway_or_close(self) -> Frame | None:
        """The server's GOAWAY frame, or None if it closed without one."""
        got, _ = self.read_until(lambda f: f.type == GOAWAY)
        return got

    def close(self) -> None:
        self.sock.close()


def goaway_error(goaway: Frame) -> int:
    error_code: int = struct.unpack(">I", goaway.payload[4:8])[0]
    return error_code


# -- child process mode ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=KINDS, default="petra")
    args = parser.parse_args()
    loop = LoopThread()
    running = start_server(args.kind, loop)
    print(running.port, flush=True)
    sys.stdin.read()  # the parent closes stdin to stop us
    running.stop(1.0)
    loop.run(running.server.wait_for_termination())
    loop.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
