"""The HTTP/2 connection of petra's gRPC transport (RFC 9113), as an asyncio Protocol.

Theory of operation: one `Connection` per TCP connection, driven by `data_received` on the
event loop with no threads. It parses frames from one buffer, keeps the connection's settings
and both directions of flow control, and hands request streams to the gRPC layer through a
small interface (`Dispatcher.open_stream` returns a `StreamHandler` that gets the stream's
data, end and reset). What the gRPC layer sends goes through `send_headers`, `send_data` and
`send_trailers`, which respect the peer's windows and frame size: data that does not fit
waits in the stream's queue until a WINDOW_UPDATE opens the window.

Receive-side flow control is generous on purpose: windows are replenished as data arrives, not
as handlers consume it, because the gRPC layer bounds what it buffers itself (a message over
the size limit fails its stream at once). That keeps a 1.5 MiB Put to one round trip.

A connection whose first bytes are not the HTTP/2 client preface is HTTP/1.x: its request head
and body (Content-Length bytes or a chunked body, read whole, at most twice the dispatcher's
max_receive_message_length, as JSON spells bytes in base64; a longer one is refused with 413)
go to the `http1` callback, and the answer is written before closing: one request per connection, no
keep-alive (etcd serves /health, /version, /metrics and its JSON gateway on the client port the
same way, through cmux). The answer is either the whole response or an async iterator of its
pieces (a chunked stream, such as the gateway's watch): each piece is written when it comes,
the next is asked for only while the socket takes writes, and a client that goes away cancels
the iteration.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

from .hpack import Decoder, HPACKError

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

# Error codes (RFC 9113 section 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x6, 0x7, 0x8, 0x9

SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 4, 5, 6

DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
MAX_FRAME_SIZE_FLOOR = 16_384
# What we receive: big windows so a large request never waits a round trip for an update.
RECV_STREAM_WINDOW = 4 << 20
RECV_CONN_WINDOW = 16 << 20
RECV_MAX_FRAME_SIZE = 1 << 18
HEADER_LIST_MAX = 64 << 10
HTTP1_HEAD_MAX = 8192
HTTP1_BODY_FACTOR = 2  # an HTTP/1 body may be this many times max_receive_message_length

_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        (len(payload) << 8 | kind).to_bytes(4, "big")
        + bytes((flags,))
        + _U32.pack(stream_id)
        + payload
    )


def _http1_refusal(status: int, reason: str) -> bytes:
    return f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


CHUNKED = -1  # _http1_body_length's length of a chunked body


def _http1_body_length(head: bytes, limit_bytes: int) -> tuple[bytes, int]:
    """(refusal, 0) for a body we will not read, else (b"", its Content-Length or CHUNKED)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            if value.strip().lower() != b"chunked":  # no compressed codings
                return _http1_refusal(501, "Not Implemented"), 0
            return b"", CHUNKED  # its length is known only at its end (RFC 9112: it wins)
        if name == b"content-length":
            text = value.strip()
            if not text.isdigit():
                return _http1_refusal(400, "Bad Request"), 0
            length = int(text)
    if length > limit_bytes:
        return _http1_refusal(413, "Request Entity Too Large"), 0
    return b"", length


class ChunkedBody:
    """An HTTP/1.1 chunked body (RFC 9112 section 7.1) decoded as its bytes arrive: `feed`
    consumes what it can from the buffer and returns the whole body once the last chunk and
    the trailer section are in (None until then). ValueError for broken framing,
    OverflowError for a body over the limit."""

    SIZE_LINE_MAX = 1024

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.body = bytearray()
        self._left = 0  # bytes of the current chunk still to come (0: a size line is next)
        self._trailers = False  # the last chunk was read: trailer lines up to an empty one

    def feed(self, buf: bytearray) -> bytes | None:
        while True:
            if self._left:
                need = self._left + 2
                if len(buf) < need:
                    return None
                if buf[self._left : need] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                self.body += buf[: self._left]
                del buf[:need]
                self._left = 0
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > self.SIZE_LINE_MAX:
                    raise ValueError("chunk size or trailer line too long")
                return None
            line = bytes(buf[:end])
            del buf[: end + 2]
            if self._trailers:
                if not line:
                    return bytes(self.body)
                continue  # trailer fields are ignored
            size_text = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                raise ValueError(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                self._trailers = True
            elif len(self.body) + size > self.limit_bytes:
                raise OverflowError("body over the limit")
            else:
                self._left = size


class ConnectionError_(Exception):  # noqa: N801 - not the builtin ConnectionError
    """A connection error: GOAWAY with `code`, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class StreamHandler(Protocol):
    def data_received(self, data: bytes) -> None: ...
    def end_received(self) -> None: ...
    def reset(self) -> None: ...


# An HTTP/1 answer: the whole response, or its pieces as they come.
Http1Answer = bytes | AsyncGenerator[bytes, None]
Http1Handler = Callable[[bytes, bytes], Awaitable[Http1Answer]]


class Dispatcher(Protocol):
    def open_stream(
        self, conn: Connection, stream: Stream, headers: list[tuple[bytes, bytes]]
    ) -> StreamHandler | None: ...

    http1: Http1Handler | None
    max_receive_message_length: int


class Stream:
    """One HTTP/2 stream's send side and state; its receive side belongs to its handler."""

    __slots__ = (
        "id",
        "handler",
        "send_window",
        "recv_unacked",
        "pending",
        "pending_bytes",
        "headers_sent",
        "closed_local",
        "closed_remote",
        "reset_done",
        "drained",
    )

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.handler: StreamHandler | None = None
        self.send_window = send_window
        self.recv_unacked = 0
        # Frames waiting for window: (payload, end_stream) for data, or (header_block, None)
        # for trailers queued behind data.
        self.pending: collections.deque[tuple[bytes, bool | None]] = collections.deque()
        self.pending_bytes = 0
        self.headers_sent = False
        self.closed_local = False
        self.closed_remote = False
        self.reset_done = False
        # Set while writers wait for pending data to drain (streaming backpressure).
        self.drained: asyncio.Future[None] | None = None


class Connection(asyncio.Protocol):
    def __init__(self, dispatcher: Dispatcher, on_close: Callable[[Connection], None]) -> None:
        self.dispatcher = dispatcher
        self.on_close = on_close
        self.transport: Any = None
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        self._buf = bytearray()
        self._mode = 0  # 0: sniffing the preface, 1: HTTP/2, 2: HTTP/1 head, 3: done,
        # 4: HTTP/1 body (until _http1_body_bytes are in _buf)
        self._http1_request = b""
        self._http1_body_bytes = 0
        self._http1_chunked: ChunkedBody | None = None
        self._decoder = Decoder()
        self._headers_stream = 0  # a header block in progress (waiting for CONTINUATION)
        self._headers_flags = 0
        self._header_block = bytearray()
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = MAX_FRAME_SIZE_FLOOR
        self.conn_send_window = DEFAULT_WINDOW
        self._conn_recv_unacked = 0
        # Streams with data waiting for connection window, in the order they blocked.
        self._blocked: dict[int, Stream] = {}
        self._write_paused = False
        self._write_resumed: asyncio.Future[None] | None = None
        self.going_away = False
        self.refuse = False
        self._http1_task: asyncio.Future[None] | None = None
        self._http1_streaming = False
        self.closed = False
        self.peer = ""

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.refuse:  # accepted as the server stopped
            self.closed = True
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small frames must leave at once: with Nagle, a response queued behind a PING
            # ACK waits for the client's delayed ACK (40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A peer that vanished without a FIN is found by TCP keepalive (Linux: first probe
            # after 2 h idle), as etcd's 2 h gRPC keepalive finds it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (
                f"ipv4:{peer[0]}:{peer[1]}" if len(peer) == 2 else f"ipv6:[{peer[0]}]:{peer[1]}"
            )

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            self._wake_writer(stream)
            if stream.handler is not None and not (stream.closed_local and stream.closed_remote):
                stream.handler.reset()
        if self._write_resumed is not None and not self._write_resumed.done():
            self._write_resumed.set_result(None)
        if self._http1_streaming and self._http1_task is not None:
            self._http1_task.cancel()  # nobody is left to read the stream
        self.on_close(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._write_resumed is not None and not self._write_resumed.done():
            self._write_resumed.set_result(None)
        self._write_resumed = None

    def data_received(self, data: bytes) -> None:
        if self._mode == 1 and not self._buf:
            consumed = self._frames(data)
            if consumed < len(data):
                self._buf += data[consumed:]
            return
        if self._mode == 3:
            return  # the HTTP/1 request is complete: what follows it is ignored, not buffered
        self._buf += data
        if self._mode == 0:
            self._sniff()
        elif self._mode == 2:
            self._http1_head()
        elif self._mode == 4:
            self._http1_body()
        buf = self._buf
        # Copy out only once a whole frame is there (a large frame arrives in many reads).
        if self._mode == 1 and len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            consumed = self._frames(bytes(buf))
            del buf[:consumed]

    # -- start: HTTP/2 preface or HTTP/1 -----------------------------------------------------
    def _sniff(self) -> None:
        n = min(len(self._buf), len(PREFACE))
        if self._buf[:n] != PREFACE[:n]:
            if self.dispatcher.http1 is None:
                # Not HTTP/2 and nobody serves HTTP/1: nothing will ever answer, so close now
                # rather than hold the connection open (grpc.aio closes it too).
                self._abandon()
                return
            self._mode = 2
            self._http1_head()
            return
        if n < len(PREFACE):
            return
        del self._buf[: len(PREFACE)]
        self._mode = 1
        settings = b"".join(
            _SETTING.pack(k, v)
            for k, v in (
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, RECV_STREAM_WINDOW),
                (SETTINGS_MAX_FRAME_SIZE, RECV_MAX_FRAME_SIZE),
                (SETTINGS_MAX_HEADER_LIST_SIZE, HEADER_LIST_MAX),
            )
        )
        self.transport.write(
            frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, _U32.pack(RECV_CONN_WINDOW - DEFAULT_WINDOW))
        )

    def _http1_head(self) -> None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > HTTP1_HEAD_MAX:
                self._abandon()
            return
        head = bytes(self._buf[: end + 4])
        del self._buf[: end + 4]
        if self.dispatcher.http1 is None:
            self._abandon()
            return
        # JSON carries bytes in base64 (4/3 of their size) and names every field: twice the
        # gRPC message limit lets every request gRPC would take arrive (the JSON gateway checks
        # the decoded request against the limit itself, with gRPC's error).
        limit_bytes = HTTP1_BODY_FACTOR * self.dispatcher.max_receive_message_length
        refusal, length = _http1_body_length(head, limit_bytes)
        if refusal:
            self._http1_refuse(refusal)
            return
        self._http1_request, self._http1_body_bytes = head, length
        if length == CHUNKED:
            self._http1_chunked = ChunkedBody(limit_bytes)
        self._mode = 4
        self._http1_body()

    def _http1_body(self) -> None:
        if self._http1_chunked is not None:
            try:
                chunked_body = self._http1_chunked.feed(self._buf)
            except OverflowError:
                self._http1_refuse(_http1_refusal(413, "Request Entity Too Large"))
                return
            except ValueError:
                self._http1_refuse(_http1_refusal(400, "Bad Request"))
                return
            if chunked_body is None:
                return
            body = chunked_body
        elif len(self._buf) < self._http1_body_bytes:
            return
        else:
            body = bytes(self._buf[: self._http1_body_bytes])
        self._buf.clear()  # no keep-alive: anything after the body is ignored
        self._mode = 3
        http1 = self.dispatcher.http1
        assert http1 is not None
        # Held here: the loop keeps only a weak reference to a task.
        self._http1_task = asyncio.ensure_future(
            self._answer_http1(http1, self._http1_request, body)
        )

    def _http1_refuse(self, refusal: bytes) -> None:
        self._mode = 3
        self._buf.clear()
        self.transport.write(refusal)
        self.transport.close()

    async def _answer_http1(self, http1: Http1Handler, head: bytes, body: bytes) -> None:
        try:
            answer = await http1(head, body)
        except Exception:
            log.exception("HTTP/1 handler failed")
            answer = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
        if isinstance(answer, bytes):
            if not self.closed:
                self.transport.write(answer)
                self.transport.close()
            return
        self._http1_streaming = not self.closed
        try:
            async for piece in answer:
                if self.closed:
                    break
                self.transport.write(piece)
                await self._writable()
        except asyncio.CancelledError:
            pass  # the client went away (connection_lost)
        except Exception:
            log.exception("HTTP/1 stream failed")
        finally:
            await answer.aclose()
            if not self.closed:
                self.transport.close()

    def _abandon(self) -> None:
        self._mode = 3
        self._buf.clear()
        self.transport.close()

    # -- frames in -------------------------------------------------------------------------
    def _frames(self, buf: bytes) -> int:
        """Handles every whole frame in `buf`; returns how many bytes were used."""
        pos, end = 0, len(buf)
        try:
            while end - pos >= 9:
                length = int.from_bytes(buf[pos : pos + 3], "big")
                if length > RECV_MAX_FRAME_SIZE:
                    raise ConnectionError_(FRAME_SIZE_ERROR, "frame too large")
                if end - pos - 9 < length:
                    break
                kind, flags = buf[pos + 3], buf[pos + 4]
                stream_id = _U32.unpack_from(buf, pos + 5)[0] & 0x7FFFFFFF
                payload = buf[pos + 9 : pos + 9 + length]
                pos += 9 + length
                if self._headers_stream and kind != CONTINUATION:
                    raise ConnectionError_(PROTOCOL_ERROR, "expected CONTINUATION")
                if kind == DATA:
                    self._on_data(stream_id, flags, payload)
                elif kind == HEADERS:
                    self._on_headers(stream_id, flags, payload)
                elif kind == CONTINUATION:
                    self._on_continuation(stream_id, flags, payload)
                elif kind == SETTINGS:
                    self._on_settings(stream_id, flags, payload)
                elif kind == WINDOW_UPDATE:
                    self._on_window_update(stream_id, payload)
                elif kind == PING:
                    if stream_id or length != 8:
                        raise ConnectionError_(PROTOCOL_ERROR, "bad PING")
                    if not flags & ACK:
                        self.transport.write(frame(PING, ACK, 0, payload))
                elif kind == RST_STREAM:
                    self._on_rst_stream(stream_id, payload)
                elif kind == GOAWAY:
                    self.going_away = True
                elif kind == PRIORITY:
                    if not stream_id or length != 5:
                        raise ConnectionError_(PROTOCOL_ERROR, "bad PRIORITY")
                elif kind == PUSH_PROMISE:
                    raise ConnectionError_(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
                # Unknown frame types are ignored (RFC 9113 section 4.1).
                if self.closed:
                    return end
        except ConnectionError_ as exc:
            self.close(exc.code, str(exc))
            return end
        return pos

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise ConnectionError_(PROTOCOL_ERROR, "bad padding")
        return payload[1 : len(payload) - payload[0]]

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._conn_recv_unacked += size
        if self._conn_recv_unacked >= RECV_CONN_WINDOW // 2:
            self.transport.write(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._conn_recv_unacked)))
            self._conn_recv_unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.closed_remote:
            if stream_id > self.last_stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "DATA on an idle stream")
            # A stream we closed or reset: the data was in flight (RFC 9113 6.1: STREAM_CLOSED).
            return
        data = self._unpad(flags, payload)
        handler = stream.handler
        if handler is not None and data:
            handler.data_received(data)
        if flags & END_STREAM:
            self._remote_end(stream)
        elif size:
            stream.recv_unacked += size
            if stream.recv_unacked >= RECV_STREAM_WINDOW // 2 and stream.id in self.streams:
                self.transport.write(
                    frame(WINDOW_UPDATE, 0, stream.id, _U32.pack(stream.recv_unacked))
                )
                stream.recv_unacked = 0

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            block = block[5:]
        if flags & END_HEADERS:
            self._header_block_done(stream_id, flags, block)
        else:
            self._headers_stream = stream_id
            self._headers_flags = flags
            self._header_block = bytearray(block)

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != self._headers_stream or not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "unexpected CONTINUATION")
        self._header_block += payload
        if len(self._header_block) > HEADER_LIST_MAX:
            raise ConnectionError_(PROTOCOL_ERROR, "header block too large")
        if flags & END_HEADERS:
            block, self._header_block = bytes(self._header_block), bytearray()
            self._headers_stream = 0
            self._header_block_done(stream_id, self._headers_flags, block)

    def _header_block_done(self, stream_id: int, flags: int, block: bytes) -> None:
        try:
            headers = self._decoder.decode(block)
        except HPACKError as exc:
            raise ConnectionError_(COMPRESSION_ERROR, f"hpack: {exc}") from exc
        stream = self.streams.get(stream_id)
        if stream is not None:
            # Trailers from the client: they only end the stream.
            if not flags & END_STREAM:
                raise ConnectionError_(PROTOCOL_ERROR, "second HEADERS without END_STREAM")
            self._remote_end(stream)
            return
        if stream_id % 2 == 0 or stream_id <= self.last_stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "bad stream id")
        self.last_stream_id = stream_id
        if self.going_away:
            self.transport.write(frame(RST_STREAM, 0, stream_id, _U32.pack(REFUSED_STREAM)))
            return
        stream = Stream(stream_id, self.peer_initial_window)
        self.streams[stream_id] = stream
        stream.handler = self.dispatcher.open_stream(self, stream, headers)
        if flags & END_STREAM and stream_id in self.streams:
            self._remote_end(stream)

    def _remote_end(self, stream: Stream) -> None:
        stream.closed_remote = True
        if stream.handler is not None:
            stream.handler.end_received()
        if stream.closed_local:
            self._forget(stream)

    def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad SETTINGS length")
        for offset in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "window too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not MAX_FRAME_SIZE_FLOOR <= value <= 2**24 - 1:
                    raise ConnectionError_(PROTOCOL_ERROR, "bad max frame size")
                self.peer_max_frame = value
            elif key == SETTINGS_ENABLE_PUSH and value > 1:
                raise ConnectionError_(PROTOCOL_ERROR, "bad ENABLE_PUSH")
        self.transport.write(frame(SETTINGS, ACK, 0))
        self._flush_blocked(every_stream=True)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise ConnectionError_(PROTOCOL_ERROR, "window increment 0")
            self.conn_send_window += increment
            if self.conn_send_window > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "window overflow")
            self._flush_blocked()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if not increment:
            self.reset_stream(stream, PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self.reset_stream(stream, FLOW_CONTROL_ERROR)
            return
        self._flush(stream)

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad RST_STREAM")
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            return
        stream.reset_done = True
        self._forget(stream)
        if stream.handler is not None:
            stream.handler.reset()

    # -- frames out ------------------------------------------------------------------------
    def send_headers(self, stream: Stream, block: bytes, end_stream: bool = False) -> None:
        if stream.reset_done or self.closed:
            return
        stream.headers_sent = True
        self.transport.write(frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0),
                                   stream.id, block))  # fmt: skip
        if end_stream:
            self._local_end(stream)

    def send_unary(self, stream: Stream, headers: bytes, data: bytes, trailers: bytes) -> None:
        """A whole response: headers (unless sent already), one message, trailers; in one
        write when the windows allow (the common case)."""
        if stream.reset_done or self.closed:
            return
        size = len(data) + 5
        if (
            stream.headers_sent
            or stream.pending
            or size > self.peer_max_frame
            or size > stream.send_window
            or size > self.conn_send_window
        ):
            if not stream.headers_sent:
                self.send_headers(stream, headers)
            self.send_data(stream, data, b"\x00" + len(data).to_bytes(4, "big"), trailers)
            return
        stream.send_window -= size
        self.conn_send_window -= size
        stream.headers_sent = True
        sid = _U32.pack(stream.id)
        self.transport.write(
            b"".join(
                (
                    (len(headers) << 8 | HEADERS).to_bytes(4, "big"),
                    b"\x04",
                    sid,
                    headers,
                    (size << 8 | DATA).to_bytes(4, "big"),
                    b"\x00",
                    sid,
                    b"\x00",
                    len(data).to_bytes(4, "big"),
                    data,
                    (len(trailers) << 8 | HEADERS).to_bytes(4, "big"),
                    b"\x05",
                    sid,
                    trailers,
                )
            )  # fmt: skip
        )
        self._local_end(stream)

    def send_data(
        self, stream: Stream, data: bytes, prefix: bytes = b"", trailers: bytes = b""
    ) -> None:
        """Sends `prefix + data` as DATA frames, then `trailers` (a header block that ends the
        stream) if given; what the windows do not allow now waits in the stream's queue."""
        if stream.reset_done or self.closed:
            return
        size = len(prefix) + len(data)
        window = min(stream.send_window, self.conn_send_window)
        if not stream.pending and size <= window and size <= self.peer_max_frame:
            # The common case: one frame, written with the trailers in one call.
            stream.send_window -= size
            self.conn_send_window -= size
            out = (size << 8 | DATA).to_bytes(4, "big") + b"\x00" + _U32.pack(stream.id)
            if trailers:
                self.transport.write(
                    b"".join(
                        (
                            out,
                            prefix,
                            data,
                            frame(HEADERS, END_HEADERS | END_STREAM, stream.id, trailers),
                        )
                    )  # fmt: skip
                )
                self._local_end(stream)
            else:
                self.transport.write(b"".join((out, prefix, data)))
            return
        payload = prefix + data if prefix else data
        stream.pending.append((payload, False))
        stream.pending_bytes += len(payload)
        if trailers:
            stream.pending.append((trailers, None))
        self._flush(stream)

    def send_trailers(self, stream: Stream, block: bytes) -> None:
        if stream.reset_done or self.closed:
            return
        if stream.pending:
            stream.pending.append((block, None))
            return
        self.send_headers(stream, block, end_stream=True)

    def _flush(self, stream: Stream) -> None:
        """Sends what the windows allow of the stream's queue."""
        out = []
        while stream.pending:
            payload, end = stream.pending[0]
            if end is None:  # trailers, after all data
                stream.pending.popleft()
                out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, payload))
                stream.headers_sent = True
                self.transport.write(b"".join(out))
                self._local_end(stream)
                return
            window = min(stream.send_window, self.conn_send_window)
            if window <= 0 and payload:
                if self.conn_send_window <= 0:
                    self._blocked[stream.id] = stream
                break
            chunk_size = min(len(payload), window, self.peer_max_frame)
            chunk = payload[:chunk_size]
            out.append(frame(DATA, 0, stream.id, chunk))
            stream.send_window -= chunk_size
            self.conn_send_window -= chunk_size
            stream.pending_bytes -= chunk_size
            if chunk_size == len(payload):
                stream.pending.popleft()
            else:
                stream.pending[0] = (payload[chunk_size:], end)
        if out:
            self.transport.write(b"".join(out))
        if not stream.pending:
            self._wake_writer(stream)

    def _flush_blocked(self, every_stream: bool = False) -> None:
        """After the connection window (or, `every_stream`, the initial window) grew."""
        if every_stream:
            waiting = [s for s in self.streams.values() if s.pending]
        else:
            waiting, self._blocked = list(self._blocked.values()), {}
        for stream in waiting:
            self._flush(stream)

    @staticmethod
    def _wake_writer(stream: Stream) -> None:
        if stream.drained is not None and not stream.drained.done():
            stream.drained.set_result(None)
        stream.drained = None

    async def drain(self, stream: Stream, limit_bytes: int) -> None:
        """Waits until the stream's queue is under `limit_bytes` and the socket takes writes
        (a streaming writer's backpressure)."""
        while stream.pending_bytes > limit_bytes and not (self.closed or stream.reset_done):
            if stream.drained is None:
                stream.drained = asyncio.get_running_loop().create_future()
            await stream.drained
        await self._writable()

    async def _writable(self) -> None:
        """Waits until the socket takes writes again (or the connection is gone)."""
        while self._write_paused and not self.closed:
            if self._write_resumed is None:
                self._write_resumed = asyncio.get_running_loop().create_future()
            await self._write_resumed

    def reset_stream(self, stream: Stream, code: int) -> None:
        if not stream.reset_done and not self.closed:
            self.transport.write(frame(RST_STREAM, 0, stream.id, _U32.pack(code)))
        stream.reset_done = True
        self._forget(stream)
        if stream.handler is not None:
            stream.handler.reset()

    def _local_end(self, stream: Stream) -> None:
        stream.closed_local = True
        if stream.closed_remote:
            self._forget(stream)
        else:
            # gRPC: the response is complete; stop the client's upload (RFC 9113 8.1).
            self.transport.write(frame(RST_STREAM, 0, stream.id, _U32.pack(NO_ERROR)))
            stream.reset_done = True
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)
        self._blocked.pop(stream.id, None)
        stream.pending.clear()
        stream.pending_bytes = 0
        self._wake_writer(stream)

    def go_away(self) -> None:
        """Refuse new streams; the ones open may finish."""
        if not self.closed and self._mode == 1 and not self.going_away:
            self.going_away = True
            self.transport.write(
                frame(GOAWAY, 0, 0, _U32.pack(self.last_stream_id) + _U32.pack(NO_ERROR))
            )

    def close(self, code: int = NO_ERROR, reason: str = "") -> None:
        if self.closed:
            return
        if self.transport is None:
            # asyncio made this protocol but failed to attach its transport: the listener
            # closed between accept and attach (Python 3.11). Nothing to write to or close.
            self.closed = True
            self.on_close(self)
            return
        if code != NO_ERROR:
            log.debug("closing connection from %s: %s", self.peer, reason)
        if self._mode == 1:
            self.transport.write(
                frame(
                    GOAWAY,
                    0,
                    0,
                    _U32.pack(self.last_stream_id) + _U32.pack(code) + reason.encode()[:256],
                )  # fmt: skip
            )
        self.closed = True
        self.transport.close()
