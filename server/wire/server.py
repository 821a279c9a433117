"""petra's gRPC server: grpc.aio's server interface on petra's own HTTP/2 connection.

Theory of operation: grpc.aio runs each RPC through a poller thread, several hand-offs to the
event loop and generic per-call machinery; on this machine that costs about 400 µs of CPU per
unary call, more than the whole Put path of etcd. Here a request is parsed in `data_received`
(server/wire/h2.py), its handler runs as one task on the same loop, and the response headers,
message and trailers leave in one write. Measured on a do-nothing Put with etcd's Go
benchmark: 58 µs of server CPU per call against grpc.aio's 404 (bench/server_ceiling.py).

The servicers are the ones written for grpc.aio, unchanged: `Server` takes the generated
`add_*Servicer_to_server` registrations, and `Call` is the servicer context (abort, metadata,
streaming read/write, deadline) as far as grpc.aio's semantics go: the same status codes and
texts for unknown methods, oversized messages, deadlines and handler failures.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import errno
import inspect
import logging
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from . import h2
from .hpack import Encoder

log = logging.getLogger(__name__)

_encoder = Encoder()
RESPONSE_HEADERS = _encoder.encode([(b":status", b"200"), (b"content-type", b"application/grpc")])
OK_TRAILERS = _encoder.encode([(b"grpc-status", b"0")])
# Headers that are transport, not the application's metadata (grpc.aio hides them too).
_NOT_METADATA = frozenset(
    (b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding")
)
_TIMEOUT_UNITS_S = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
# Connections the kernel queues before accept: a burst beyond it has SYNs dropped (1 s retry).
LISTEN_BACKLOG = 1024
TLS_HANDSHAKE_TIMEOUT_S = 10.0  # a client that connects and never says hello is dropped
# A streaming writer waits when this much of its output is queued behind flow control.
WRITE_BUFFER_BYTES = 1 << 20
_C = grpc.StatusCode


class _Abort(Exception):
    """Raised by `Call.abort`: ends the RPC with the status already set on the call."""


def _status_trailers(code: grpc.StatusCode, details: str, metadata: Iterable[Any]) -> bytes:
    fields = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        fields.append((b"grpc-message", _percent_encode(details)))
    fields.extend(_metadata_fields(metadata))
    return _encoder.encode(fields)


def _percent_encode(text: str) -> bytes:
    # gRPC's grpc-message: printable ASCII except '%' as is, every other byte as %XX.
    raw = text.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def _metadata_fields(metadata: Iterable[Any]) -> list[tuple[bytes, bytes]]:
    fields = []
    for key, value in metadata or ():
        name = key.lower().encode("ascii")
        if name.endswith(b"-bin"):
            data = value if isinstance(value, bytes) else value.encode()
            fields.append((name, base64.b64encode(data).rstrip(b"=")))
        else:
            fields.append((name, value.encode("ascii") if isinstance(value, str) else value))
    return fields


def _parse_timeout_s(value: bytes) -> float | None:
    unit = _TIMEOUT_UNITS_S.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


class Call:
    """One RPC: the HTTP/2 stream's handler and the servicer's context."""

    def __init__(
        self,
        server: Server,
        conn: h2.Connection,
        stream: h2.Stream,
        path: str,
        handler: Any,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._server = server
        self._conn = conn
        self._stream = stream
        self._path = path
        self._handler = handler
        self._headers = headers
        self._buf = bytearray()
        self._request: bytes | None = None
        self._requests: collections.deque[Any] = collections.deque()
        self._request_waiter: asyncio.Future[None] | None = None
        self._ended = False  # the client sent END_STREAM
        self._done = False  # trailers sent or stream reset
        self._cancelled = False
        self._task: asyncio.Task[None] | None = None
        self._deadline_s: float | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._code = _C.OK
        self._details = ""
        self._trailing: tuple[Any, ...] = ()
        self._done_callbacks: list[Callable[[Call], None]] = []
        self._encoding = b"identity"
        self._started_s = time.perf_counter()
        for name, value in headers:
            if name == b"grpc-timeout":
                timeout_s = _parse_timeout_s(value)
                if timeout_s is not None:
                    self._deadline_s = time.monotonic() + timeout_s
                    self._deadline_timer = asyncio.get_running_loop().call_later(
                        timeout_s, self._deadline_exceeded
                    )
            elif name == b"grpc-encoding":
                self._encoding = value
        if handler.request_streaming:
            self._start()

    # -- h2.StreamHandler ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        limit = self._server.max_receive_message_length
        while len(buf) >= 5:
            length = int.from_bytes(buf[1:5], "big")
            if length > limit:
                self._fail_now(
                    _C.RESOURCE_EXHAUSTED,
                    f"SERVER: Received message larger than max ({length} vs. {limit})",
                )
                return
            if len(buf) < 5 + length:
                return
            compressed = buf[0]
            message = bytes(buf[5 : 5 + length])
            del buf[: 5 + length]
            if compressed:
                try:
                    message = self._decompress(message)
                except ValueError as exc:
                    self._fail_now(_C.INTERNAL, str(exc))
                    return
            if self._handler.request_streaming:
                self._requests.append(message)
                self._wake_reader()
            elif self._request is not None:
                self._fail_now(_C.UNIMPLEMENTED, "received more than one request for a unary call")
                return
            else:
                self._request = message

    def end_received(self) -> None:
        self._ended = True
        if self._done:
            return
        if self._handler.request_streaming:
            self._wake_reader()
        elif self._buf or self._request is None:
            self._fail_now(_C.INTERNAL, "incomplete request message")
        else:
            self._start()

    def reset(self) -> None:
        """The client cancelled (RST_STREAM) or the connection is gone."""
        if self._done:
            return
        self._cancelled = True
        self._finish()
        if self._task is not None:
            self._task.cancel()
        self._wake_reader()

    # -- running the handler -----------------------------------------------------------------
    def _start(self) -> None:
        handler = self._handler
        if handler.unary_unary is not None:
            run = self._unary_unary(handler.unary_unary)
        elif handler.unary_stream is not None:
            run = self._streaming(handler.unary_stream, self._decode_request())
        elif handler.stream_unary is not None:
            run = self._unary_response(handler.stream_unary)
        else:
            run = self._streaming(handler.stream_stream, _RequestIterator(self))
        self._task = asyncio.get_running_loop().create_task(run)
        self._server._calls.add(self)

    def _decode_request(self) -> Any:
        deserialize = self._handler.request_deserializer
        request = self._request
        self._request = None
        return deserialize(request) if deserialize is not None else request

    def _serialize(self, response: Any) -> bytes:
        serialize = self._handler.response_serializer
        data: bytes = serialize(response) if serialize is not None else response
        limit = self._server.max_send_message_length
        if len(data) > limit:
            self._code = _C.RESOURCE_EXHAUSTED
            self._details = f"SERVER: Sent message larger than max ({len(data)} vs. {limit})"
            raise _Abort()
        return data

    async def _unary_unary(self, behaviour: Any) -> None:
        try:
            result = behaviour(self._decode_request(), self)
            if inspect.isawaitable(result):
                result = await result
            data = self._serialize(result)
        except BaseException as exc:
            self._end_with(exc)
            return
        if self._done:
            return
        trailers = OK_TRAILERS if self._code == _C.OK and not self._trailing else self._trailers()
        self._conn.send_unary(self._stream, RESPONSE_HEADERS, data, trailers)
        self._finish()

    async def _unary_response(self, behaviour: Any) -> None:
        try:
            result = behaviour(_RequestIterator(self), self)
            if inspect.isawaitable(result):
                result = await result
            data = self._serialize(result)
        except BaseException as exc:
            self._end_with(exc)
            return
        if not self._done:
            self._conn.send_unary(self._stream, RESPONSE_HEADERS, data, self._trailers())
            self._finish()

    async def _streaming(self, behaviour: Any, request: Any) -> None:
        try:
            await send_responses(behaviour(request, self), self.write)
        except BaseException as exc:
            self._end_with(exc)
            return
        self._end_with(None)

    def _end_with(self, exc: BaseException | None) -> None:
        """Sends the final status: the one set on the call, or what `exc` means."""
        if self._done:
            return
        if isinstance(exc, asyncio.CancelledError):
            # Cancelled by the server (stop): the client should retry elsewhere.
            self._code, self._details = _C.UNAVAILABLE, "server closing"
        elif isinstance(exc, _Abort):
            pass
        elif exc is not None:
            if not isinstance(exc, Exception):
                self._finish()
                raise exc
            log.error("handler of %s failed", self._path, exc_info=exc)
            self._code = _C.UNKNOWN
            self._details = f"Unexpected {type(exc)}: {exc}"
        trailers = self._trailers()
        if self._stream.headers_sent:
            self._conn.send_trailers(self._stream, trailers)
        else:  # Trailers-Only
            self._conn.send_headers(self._stream, RESPONSE_HEADERS + trailers, True)
        self._finish()

    def _trailers(self) -> bytes:
        if self._code == _C.OK and not self._details and not self._trailing:
            return OK_TRAILERS
        return _status_trailers(self._code, self._details, self._trailing)

    def _fail_now(self, code: grpc.StatusCode, details: str) -> None:
        """Ends the RPC now, whatever its handler is doing (bad request data, deadline): the
        status goes out, then the handler's task is cancelled."""
        if self._done:
            return
        self._code, self._details = code, details
        task, self._task = self._task, None
        self._end_with(None)
        if task is not None:
            task.cancel()
        self._wake_reader()

    def _deadline_exceeded(self) -> None:
        self._deadline_timer = None
        self._fail_now(_C.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._server._call_finished(self)
        if self._handler.unary_unary is not None and self._server.on_unary_done is not None:
            self._server.on_unary_done(self._path, time.perf_counter() - self._started_s)
        for callback in self._done_callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("done callback failed")

    def cancel_by_server(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        elif not self._done:
            self._code, self._details = _C.UNAVAILABLE, "server closing"
            self._end_with(None)

    def _decompress(self, message: bytes) -> bytes:
        if self._encoding == b"gzip":
            return zlib.decompress(message, 16 + zlib.MAX_WBITS)
        if self._encoding == b"deflate":
            return zlib.decompress(message)
        raise ValueError(f"compressed message with grpc-encoding {self._encoding.decode()!r}")

    # -- reading a request stream ------------------------------------------------------------
    def _wake_reader(self) -> None:
        waiter = self._request_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._request_waiter = None

    async def read(self) -> Any:
        while not self._requests:
            if self._ended or self._done:
                return grpc.aio.EOF
            self._request_waiter = asyncio.get_running_loop().create_future()
            await self._request_waiter
        message = self._requests.popleft()
        deserialize = self._handler.request_deserializer
        return deserialize(message) if deserialize is not None else message

    # -- grpc.aio.ServicerContext ------------------------------------------------------------
    async def write(self, message: Any) -> None:
        if self._done:
            raise asyncio.CancelledError()
        data = self._serialize(message)
        conn, stream = self._conn, self._stream
        if not stream.headers_sent:
            conn.send_headers(stream, RESPONSE_HEADERS)
        conn.send_data(stream, data, b"\x00" + len(data).to_bytes(4, "big"))
        if stream.pending_bytes > WRITE_BUFFER_BYTES or conn._write_paused:
            await conn.drain(stream, WRITE_BUFFER_BYTES)

    async def send_initial_metadata(self, metadata: Any) -> None:
        if not self._stream.headers_sent and not self._done:
            block = RESPONSE_HEADERS + _encoder.encode(_metadata_fields(metadata))
            self._conn.send_headers(self._stream, block)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        if code == _C.OK:
            raise ValueError("abort with OK status")
        self._code, self._details = code, details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise _Abort()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._trailing = tuple(metadata)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._trailing

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        pairs: list[tuple[str, str | bytes]] = []
        for name, value in self._headers:
            if name[:1] == b":" or name in _NOT_METADATA:
                continue
            key = name.decode("latin-1")
            if key.endswith("-bin"):
                pairs.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
            else:
                pairs.append((key, value.decode("latin-1")))
        return tuple(pairs)

    def peer(self) -> str:
        return self._conn.peer

    def time_remaining(self) -> float | None:
        if self._deadline_s is None:
            return None
        return max(0.0, self._deadline_s - time.monotonic())

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[Call], None]) -> None:
        if self._done:
            callback(self)
        else:
            self._done_callbacks.append(callback)

    def disable_next_message_compression(self) -> None:
        pass

    def set_compression(self, compression: Any) -> None:
        pass


class _RequestIterator:
    __slots__ = ("_call",)

    def __init__(self, call: Call) -> None:
        self._call = call

    def __aiter__(self) -> _RequestIterator:
        return self

    async def __anext__(self) -> Any:
        message = await self._call.read()
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return message


class _CallDetails:
    __slots__ = ("method", "invocation_metadata")

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[Any, ...] = ()


async def send_responses(result: Any, write: Callable[[Any], Awaitable[None]]) -> None:
    """Runs what a streaming handler returned: the responses of an async or plain generator
    go to `write`; a coroutine (a handler that writes through its context) is awaited."""
    if hasattr(result, "__anext__"):
        async for response in result:
            await write(response)
    elif inspect.isawaitable(result):
        await result
    elif result is not None:  # a sync generator
        for response in result:
            await write(response)


class Server:
    """grpc.aio.Server's interface (as petra uses it) over server/wire/h2.py."""

    def __init__(
        self,
        *,
        max_receive_message_length: int = 4 * 1024 * 1024,
        max_send_message_length: int = 2**31 - 1,
        on_request: Callable[[str], None] | None = None,  # per RPC of a known method
        on_unary_done: Callable[[str, float], None] | None = None,
        http1: h2.Http1Handler | None = None,
    ) -> None:
        self.max_receive_message_length = max_receive_message_length
        self.max_send_message_length = max_send_message_length
        self.on_request = on_request
        self.on_unary_done = on_unary_done
        self.http1 = http1
        self._methods: dict[str, Any] = {}
        self._generic: list[Any] = []
        self._sockets: list[socket.socket] = []
        self._contexts: dict[socket.socket, ssl.SSLContext] = {}  # the TLS sockets' settings
        self._listeners: list[asyncio.AbstractServer] = []
        self._conns: set[h2.Connection] = set()
        self._calls: set[Call] = set()
        self._stopped: asyncio.Event | None = None
        self._stopping = False
        self._calls_idle: asyncio.Event | None = None  # set once no call is left, when stopping

    def _call_finished(self, call: Call) -> None:
        self._calls.discard(call)
        if not self._calls and self._calls_idle is not None:
            self._calls_idle.set()

    # -- registration ------------------------------------------------------------------------
    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for method, handler in handlers.items():
            self._methods[f"/{service}/{method}"] = handler

    def handler_for(self, path: str) -> Any:
        """The grpc.RpcMethodHandler serving a full method path ("/etcdserverpb.KV/Range"), or
        None (also used by server/gateway.py to call a servicer without HTTP/2)."""
        handler = self._methods.get(path)
        if handler is None:
            for generic in self._generic:
                handler = generic.service(_CallDetails(path))
                if handler is not None:
                    self._methods[path] = handler
                    break
        return handler

    # -- h2.Dispatcher ---------------------------------------------------------------------
    def open_stream(
        self, conn: h2.Connection, stream: h2.Stream, headers: list[tuple[bytes, bytes]]
    ) -> Call | None:
        path = method = content_type = b""
        list_size = 0
        for name, value in headers:
            list_size += len(name) + len(value) + 32  # RFC 9113's header list size
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
            elif name == b"content-type":
                content_type = value
        if list_size > h2.HEADER_LIST_MAX:  # what we advertised (Huffman can hide the size)
            block = RESPONSE_HEADERS + _status_trailers(
                _C.RESOURCE_EXHAUSTED, "received header list size exceeded", ()
            )
            conn.send_headers(stream, block, True)
            return None
        if method != b"POST":
            conn.send_headers(stream, _encoder.encode([(b":status", b"405")]), True)
            return None
        if not content_type.startswith(b"application/grpc"):
            conn.send_headers(stream, _encoder.encode([(b":status", b"415")]), True)
            return None
        text = path.decode("latin-1")
        handler = self.handler_for(text)
        if handler is None:
            block = RESPONSE_HEADERS + _status_trailers(_C.UNIMPLEMENTED, "Method not found!", ())
            conn.send_headers(stream, block, True)
            return None
        if self.on_request is not None:  # served methods only: a client cannot grow the labels
            self.on_request(text)
        return Call(self, conn, stream, text, handler, headers)

    # -- life cycle --------------------------------------------------------------------------
    def add_secure_port(self, address: str, context: ssl.SSLContext) -> int:
        """add_insecure_port for TLS connections with `context` (which offers ALPN "h2").
        Unlike grpc.aio's, it takes an ssl.SSLContext: the HTTP/1 endpoints on the same port
        (the JSON gateway, /health) are served through it too."""
        port = self.add_insecure_port(address)
        if port:
            self._contexts[self._sockets[-1]] = context
        return port

    def add_insecure_port(self, address: str) -> int:
        """Binds now (so a port in use is known before anything else starts); 0 if taken."""
        host, _, port_text = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", int(port_text)))
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                return 0
            raise
        sock.setblocking(False)
        self._sockets.append(sock)
        return int(sock.getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        for sock in self._sockets:
            # backlog: create_server listens again with its own (default 100), overriding ours.
            server = await loop.create_server(
                self._new_connection,
                sock=sock,
                backlog=LISTEN_BACKLOG,
                ssl=self._contexts.get(sock),
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if sock in self._contexts else None,
            )
            self._listeners.append(server)

    def _new_connection(self) -> h2.Connection:
        conn = h2.Connection(self, self._conns.discard)
        conn.refuse = self._stopping
        self._conns.add(conn)
        return conn

    async def stop(self, grace: float | None) -> None:
        # Stop accepting first, but close the listeners only at the end: asyncio cannot attach
        # a connection it accepted just before to a closed server, and would leave its socket
        # open until garbage collection. Those late connections set up now and are refused.
        self._stopping = True
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            if sock.fileno() >= 0:  # not closed by an earlier stop()
                loop.remove_reader(sock.fileno())
        for _ in range(2):
            await asyncio.sleep(0)  # connections accepted before this point finish setting up
        for conn in list(self._conns):
            conn.go_away()
        if grace and self._calls:
            self._calls_idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._calls_idle.wait(), grace)
        tasks = [call._task for call in self._calls if call._task is not None]
        for call in list(self._calls):
            call.cancel_by_server()
        if tasks:  # let cancelled handlers send their status
            await asyncio.wait(tasks, timeout=1.0)
        for conn in list(self._conns):
            conn.close()
        for listener in self._listeners:
            listener.close()
        if self._stopped is not None:
            self._stopped.set()

    async def wait_for_termination(self) -> None:
        if self._stopped is not None:
            await self._stopped.wait()
