"""etcd 3.4's JSON gateway (grpc-gateway) on the client port: POST /v3/kv/range and friends.

Theory of operation. h2.py hands each HTTP/1 request (head and Content-Length body) on the
client port to server/main.py, which sends /v3/ paths here. `answer` finds the gRPC method
for the path in ROUTES (etcd's `google.api.http` annotations), parses the body as that
method's request with protobuf's JSON mapping (proto or lowerCamel field names, bytes as
base64, int64 as string or number, unknown fields ignored, as etcd's jsonpb unmarshaler does),
calls the servicer registered on the wire Server directly (no HTTP/2 round trip) with a small
context, and writes the answer as etcd's gateway does: compact JSON with the .proto field
names, 64-bit integers as strings, defaults omitted. A gRPC error becomes
`{"error": text, "message": text, "code": n}` with grpc-gateway v1's HTTP status for the code.

The streaming methods (watch, lease keep-alive, snapshot, election observe) answer as etcd's
gateway does, over chunked HTTP/1.1: the body is a sequence of JSON requests (a bidi stream's
requests, read up to the first that does not parse; the client's side then ends, as at EOF),
and each response is a chunk `{"result": ...}` and a newline, sent as the servicer produces
it. The response head goes out with the first response, as etcd's waits for its gRPC headers.
An error ends the stream with `{"error": {"grpc_code", "http_code", "message",
"http_status"}}` (grpc-gateway's StreamError). A watch stays open until the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from http import HTTPStatus
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from api.etcdserverpb import rpc_pb2
from api.v3electionpb import v3election_pb2
from api.v3lockpb import v3lock_pb2

from .wire.server import send_responses

_KV, _LEASE = "/etcdserverpb.KV/", "/etcdserverpb.Lease/"
_MAINT, _CLUSTER = "/etcdserverpb.Maintenance/", "/etcdserverpb.Cluster/"
_LOCK, _ELECTION = "/v3lockpb.Lock/", "/v3electionpb.Election/"

# HTTP path -> (gRPC method path, request class), from etcd 3.4's .proto annotations.
# /v3/maintenance/hash is Hash (HashKV has no route of its own in 3.4: 404).
ROUTES: dict[str, tuple[str, type[Message]]] = {
    "/v3/kv/range": (_KV + "Range", rpc_pb2.RangeRequest),
    "/v3/kv/put": (_KV + "Put", rpc_pb2.PutRequest),
    "/v3/kv/deleterange": (_KV + "DeleteRange", rpc_pb2.DeleteRangeRequest),
    "/v3/kv/txn": (_KV + "Txn", rpc_pb2.TxnRequest),
    "/v3/kv/compaction": (_KV + "Compact", rpc_pb2.CompactionRequest),
    "/v3/lease/grant": (_LEASE + "LeaseGrant", rpc_pb2.LeaseGrantRequest),
    "/v3/lease/revoke": (_LEASE + "LeaseRevoke", rpc_pb2.LeaseRevokeRequest),
    "/v3/kv/lease/revoke": (_LEASE + "LeaseRevoke", rpc_pb2.LeaseRevokeRequest),
    "/v3/lease/timetolive": (_LEASE + "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest),
    "/v3/kv/lease/timetolive": (_LEASE + "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest),
    "/v3/lease/leases": (_LEASE + "LeaseLeases", rpc_pb2.LeaseLeasesRequest),
    "/v3/kv/lease/leases": (_LEASE + "LeaseLeases", rpc_pb2.LeaseLeasesRequest),
    "/v3/maintenance/alarm": (_MAINT + "Alarm", rpc_pb2.AlarmRequest),
    "/v3/maintenance/status": (_MAINT + "Status", rpc_pb2.StatusRequest),
    "/v3/maintenance/defragment": (_MAINT + "Defragment", rpc_pb2.DefragmentRequest),
    "/v3/maintenance/hash": (_MAINT + "Hash", rpc_pb2.HashRequest),
    "/v3/maintenance/transfer-leadership": (_MAINT + "MoveLeader", rpc_pb2.MoveLeaderRequest),
    "/v3/cluster/member/add": (_CLUSTER + "MemberAdd", rpc_pb2.MemberAddRequest),
    "/v3/cluster/member/remove": (_CLUSTER + "MemberRemove", rpc_pb2.MemberRemoveRequest),
    "/v3/cluster/member/update": (_CLUSTER + "MemberUpdate", rpc_pb2.MemberUpdateRequest),
    "/v3/cluster/member/list": (_CLUSTER + "MemberList", rpc_pb2.MemberListRequest),
    "/v3/cluster/member/promote": (_CLUSTER + "MemberPromote", rpc_pb2.MemberPromoteRequest),
    "/v3/lock/lock": (_LOCK + "Lock", v3lock_pb2.LockRequest),
    "/v3/lock/unlock": (_LOCK + "Unlock", v3lock_pb2.UnlockRequest),
    "/v3/election/campaign": (_ELECTION + "Campaign", v3election_pb2.CampaignRequest),
    "/v3/election/proclaim": (_ELECTION + "Proclaim", v3election_pb2.ProclaimRequest),
    "/v3/election/leader": (_ELECTION + "Leader", v3election_pb2.LeaderRequest),
    "/v3/election/resign": (_ELECTION + "Resign", v3election_pb2.ResignRequest),
}
# HTTP path -> (gRPC method path, request class, whether the client streams too).
STREAMS: dict[str, tuple[str, type[Message], bool]] = {
    "/v3/watch": ("/etcdserverpb.Watch/Watch", rpc_pb2.WatchRequest, True),
    "/v3/lease/keepalive": (_LEASE + "LeaseKeepAlive", rpc_pb2.LeaseKeepAliveRequest, True),
    "/v3/maintenance/snapshot": (_MAINT + "Snapshot", rpc_pb2.SnapshotRequest, False),
    "/v3/election/observe": (_ELECTION + "Observe", v3election_pb2.LeaderRequest, False),
}
STREAM_QUEUE_MAX = 16  # responses a stream may run ahead of its HTTP client

_C = grpc.StatusCode
# grpc-gateway v1 (as vendored by etcd 3.4): HTTPStatusFromCode.
HTTP_STATUS = {
    _C.OK: 200,
    _C.CANCELLED: 408,
    _C.UNKNOWN: 500,
    _C.INVALID_ARGUMENT: 400,
    _C.DEADLINE_EXCEEDED: 504,
    _C.NOT_FOUND: 404,
    _C.ALREADY_EXISTS: 409,
    _C.PERMISSION_DENIED: 403,
    _C.UNAUTHENTICATED: 401,
    _C.RESOURCE_EXHAUSTED: 429,
    _C.FAILED_PRECONDITION: 412,
    _C.ABORTED: 409,
    _C.OUT_OF_RANGE: 400,
    _C.UNIMPLEMENTED: 501,
    _C.INTERNAL: 500,
    _C.UNAVAILABLE: 503,
    _C.DATA_LOSS: 500,
}
# etcd answers every gateway response with these (its CORS wrapper and grpc-gateway's header).
COMMON_HEADERS = (
    "Access-Control-Allow-Headers: accept, content-type, authorization\r\n"
    "Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n"
    "Access-Control-Allow-Origin: *\r\n"
)

Lookup = Callable[[str], Any]  # wire Server.handler_for
OnRequest = Callable[[str], None]  # wire Server.on_request: a metric per method


class GatewayError(Exception):
    """A gRPC status to answer with (from the servicer's abort or from parsing the body)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class GatewayContext:
    """What petra's servicers use of a grpc.aio context, for one gateway call."""

    def __init__(self, peer: str = "") -> None:
        self._peer = peer
        self.code = _C.OK
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing: Any = ()) -> None:
        raise GatewayError(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None  # grpc-gateway sets no deadline unless the client sends Grpc-Timeout

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    def add_done_callback(self, callback: Any) -> None:
        pass


class StreamContext(GatewayContext):
    """A streaming call's context: what the servicer writes waits in a small queue for the
    HTTP client to take it (backpressure, as a gRPC stream's flow control gives)."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: asyncio.Queue[Message | None] = asyncio.Queue(STREAM_QUEUE_MAX)

    async def write(self, response: Message) -> None:
        await self.responses.put(response)


def _response(status: int, content_type: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n{COMMON_HEADERS}{extra}"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _error(code: grpc.StatusCode, details: str) -> bytes:
    body = {"error": details, "message": details, "code": code.value[0]}
    return _response(HTTP_STATUS.get(code, 500), "application/json", _dumps(body))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _go_json_error(text: str, exc: json.JSONDecodeError) -> str:
    """The message Go's encoding/json gives for the syntax error Python found."""
    if exc.pos >= len(text.rstrip()):
        return "unexpected EOF"
    char = text[exc.pos]
    if exc.msg.startswith("Expecting property name"):
        return f"invalid character {char!r} looking for beginning of object key string"
    if exc.msg == "Expecting ':' delimiter":
        return f"invalid character {char!r} after object key"
    if exc.msg == "Expecting ',' delimiter":
        # Python says this inside arrays too; objects are what requests are made of.
        return f"invalid character {char!r} after object key:value pair"
    return f"invalid character {char!r} looking for beginning of value"


_GO_KINDS = {list: "array", str: "string", bool: "bool", int: "number", float: "number"}


def parse_request(body: bytes, request_class: type[Message]) -> Message:
    """The request from the JSON body; GatewayError(INVALID_ARGUMENT) as etcd words it.
    Go's decoder reads one value and ignores what follows it."""
    text = body.decode("utf-8", errors="replace")
    return _parse_at(text, _skip_space(text, 0), request_class)[0]


def parse_requests(body: bytes, request_class: type[Message]) -> list[Message]:
    """A client stream's requests: the JSON values of the body, one after another, as Go's
    json.Decoder reads them. The gateway passes the first value's error on as it is (so a
    GatewayError UNKNOWN, not INVALID_ARGUMENT); a later value that does not parse just ends
    the client's side of the stream, as its end of body would."""
    text = body.decode("utf-8", errors="replace")
    requests: list[Message] = []
    pos = _skip_space(text, 0)
    while pos < len(text):
        try:
            request, pos = _parse_at(text, pos, request_class)
        except GatewayError as exc:
            if not requests:
                raise GatewayError(_C.UNKNOWN, exc.details) from exc
            break
        requests.append(request)
        pos = _skip_space(text, pos)
    return requests


def _skip_space(text: str, pos: int) -> int:
    """The index of the first non-JSON-whitespace character from `pos`."""
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _parse_at(text: str, pos: int, request_class: type[Message]) -> tuple[Message, int]:
    """The request from the JSON value at `pos` (none there: the empty request) and the
    index just after the value."""
    value: Any = None
    end = pos
    if pos < len(text):
        try:
            value, end = json.JSONDecoder().raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise GatewayError(_C.INVALID_ARGUMENT, _go_json_error(text, exc)) from exc
    request = request_class()
    if value is None:  # an empty body or `null`: the empty request
        return request, end
    if not isinstance(value, dict):
        kind = _GO_KINDS.get(type(value), "value")
        raise GatewayError(
            _C.INVALID_ARGUMENT,
            f"json: cannot unmarshal {kind} into Go value of type map[string]json.RawMessage",
        )
    _check_fields(value, request.DESCRIPTOR)
    try:
        json_format.ParseDict(value, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise GatewayError(_C.INVALID_ARGUMENT, str(exc)) from exc
    return request, end


_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_INT_TYPES = {
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_UINT32: "uint32",
}


def _go_kind(value: Any) -> str:
    return "object" if isinstance(value, dict) else _GO_KINDS.get(type(value), "value")


def _check_fields(value: dict[str, Any], descriptor: Any) -> None:  # a message Descriptor
    """The errors Go's jsonpb gives for a value of the wrong form, which protobuf's Python
    parser words differently; what passes here is left to json_format."""
    fields = {**descriptor.fields_by_name, **{f.json_name: f for f in descriptor.fields}}
    for name, item in value.items():
        field = fields.get(name)
        if field is None or item is None:
            continue
        if not field.is_repeated:
            _check_value(item, field)
        elif not isinstance(item, list):
            _bad(f"json: cannot unmarshal {_go_kind(item)} into Go value of type []json.RawMessage")
        else:
            for element in item:
                _check_value(element, field)


def _go_enum_name(field: FieldDescriptor) -> str:
    assert field.enum_type is not None, field.full_name
    package, _, name = field.enum_type.full_name.partition(".")
    return f"{package}.{name.replace('.', '_')}"


def _enum_values(field: FieldDescriptor) -> Any:
    assert field.enum_type is not None, field.full_name
    return field.enum_type.values_by_name


def _cannot(value: Any, go_type: str) -> NoReturn:
    _bad(f"json: cannot unmarshal {_go_kind(value)} into Go value of type {go_type}")


def _check_value(value: Any, field: FieldDescriptor) -> None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_BYTES:
        if not isinstance(value, str):
            _cannot(value, "[]uint8")
        _check_base64(value.encode())
    elif kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            _cannot(value, "bool")
    elif kind == FieldDescriptor.TYPE_ENUM:
        if isinstance(value, str):
            if value not in _enum_values(field):
                _bad(f'unknown value "{value}" for enum {_go_enum_name(field)}')
        elif not isinstance(value, int) or isinstance(value, bool):
            _cannot(value, _go_enum_name(field))
    elif kind in _INT_TYPES:
        _check_integer(value, _INT_TYPES[kind])
    elif kind == FieldDescriptor.TYPE_MESSAGE:
        if not isinstance(value, dict):
            _cannot(value, "map[string]json.RawMessage")
        _check_fields(value, field.message_type)


def _check_integer(value: Any, go_type: str) -> None:
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str):
        try:
            number = json.loads(text)
        except ValueError:
            _bad(f"invalid character {text[:1]!r} looking for beginning of value")
        if isinstance(number, float):
            _bad(f"json: cannot unmarshal number {text} into Go value of type {go_type}")
    elif isinstance(value, float):
        _bad(f"json: cannot unmarshal number {value} into Go value of type {go_type}")
    elif not isinstance(value, int) or isinstance(value, bool):
        _cannot(value, go_type)


def _check_base64(data: bytes) -> None:
    """Go's base64.StdEncoding: the offset of the first byte it refuses."""
    for index, byte in enumerate(data):
        if byte not in _B64_ALPHABET or (byte == 0x3D and index < len(data) - 2):
            _bad(f"illegal base64 data at input byte {index}")
    if len(data) % 4:  # an unfinished last quantum is reported at its start
        _bad(f"illegal base64 data at input byte {len(data) - len(data) % 4}")


def _bad(text: str) -> NoReturn:
    raise GatewayError(_C.INVALID_ARGUMENT, text)


async def call(
    lookup: Lookup, method: str, request: Message, on_request: OnRequest | None = None
) -> Message:
    """Runs the unary servicer method on `request`; GatewayError for a non-OK status.
    `on_request(method)` counts the call as the gRPC server counts its own (etcd's gateway
    is a gRPC client of its server, so its calls show in the same metrics)."""
    handler = lookup(method)
    if handler is None or handler.unary_unary is None:
        raise GatewayError(_C.UNIMPLEMENTED, f"unknown service {method}")
    if on_request is not None:
        on_request(method)
    context = GatewayContext()
    try:
        result = handler.unary_unary(request, context)
        if inspect.isawaitable(result):
            result = await result
    except GatewayError:
        raise
    except Exception as exc:  # what grpc.aio reports for a handler that raised
        raise GatewayError(_C.UNKNOWN, f"Unexpected {type(exc)}: {exc}") from exc
    if context.code != _C.OK:
        raise GatewayError(context.code, context.details)
    assert isinstance(result, Message), f"{method} returned {type(result)}"
    return result


def to_json(message: Message) -> bytes:
    """etcd's jsonpb output: proto field names, 64-bit integers as strings, defaults omitted."""
    return _dumps(json_format.MessageToDict(message, preserving_proto_field_name=True))


def is_gateway_request(head: bytes) -> bool:
    """Whether the request's path is under /v3/ (the gateway's; the rest is /health etc.)."""
    return _request_line(head)[1].startswith("/v3/")


def _request_line(head: bytes) -> tuple[str, str]:
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3:
        return "", ""
    return parts[0], parts[1].split("?", 1)[0]


async def answer(
    lookup: Lookup,
    head: bytes,
    body: bytes,
    max_message_bytes: int,
    on_request: OnRequest | None = None,
) -> bytes | AsyncGenerator[bytes, None]:
    """The HTTP/1.1 response to one /v3/ request: the whole of it, or for a stream its pieces
    as they come. A request that would be a gRPC message over `max_message_bytes` is refused
    as the gRPC server would."""
    method, path = _request_line(head)
    if method == "OPTIONS":  # etcd's CORS wrapper answers preflights before any routing
        return (f"HTTP/1.1 200 OK\r\n{COMMON_HEADERS}Content-Length: 0\r\n"
                "Connection: close\r\n\r\n").encode()  # fmt: skip
    route = ROUTES.get(path)
    if route is None and path not in STREAMS:
        reply = _response(404, "text/plain; charset=utf-8", b"Not Found\n", _NOSNIFF)
    elif method != "POST":
        reply = _response(405, "text/plain; charset=utf-8", b"Method Not Allowed\n", _NOSNIFF)
    elif route is None:
        return _open_stream(lookup, STREAMS[path], body, max_message_bytes, on_request)
    else:
        return await _post(lookup, route, body, max_message_bytes, on_request)
    if method == "HEAD":
        return reply[: reply.index(b"\r\n\r\n") + 4]
    return reply


def _check_size(request: Message, max_message_bytes: int) -> None:
    """What etcd's gateway gets back from its gRPC server for an oversized request."""
    size = request.ByteSize()
    if size > max_message_bytes:
        raise GatewayError(
            _C.RESOURCE_EXHAUSTED,
            f"grpc: received message larger than max ({size} vs. {max_message_bytes})",
        )


async def _post(
    lookup: Lookup,
    route: tuple[str, type[Message]],
    body: bytes,
    max_message_bytes: int,
    on_request: OnRequest | None,
) -> bytes:
    """The answer to a POST on a unary gateway path: the servicer's response or its error."""
    grpc_method, request_class = route
    try:
        request = parse_request(body, request_class)
        _check_size(request, max_message_bytes)
        response = await call(lookup, grpc_method, request, on_request)
    except GatewayError as exc:
        return _error(exc.code, exc.details)
    return _response(
        200,
        "application/json",
        to_json(response),
        "Grpc-Metadata-Content-Type: application/grpc\r\n",
    )


_NOSNIFF = "X-Content-Type-Options: nosniff\r\n"


def _open_stream(
    lookup: Lookup,
    route: tuple[str, type[Message], bool],
    body: bytes,
    max_message_bytes: int,
    on_request: OnRequest | None,
) -> bytes | AsyncGenerator[bytes, None]:
    """A POST on a streaming path: an error response if the requests do not parse, else the
    stream's pieces."""
    grpc_method, request_class, client_streams = route
    handler = lookup(grpc_method)
    if handler is None:
        return _error(_C.UNIMPLEMENTED, f"unknown service {grpc_method}")
    try:
        if client_streams:
            requests = parse_requests(body, request_class)
        else:
            requests = [parse_request(body, request_class)]
        for request in requests:
            _check_size(request, max_message_bytes)
    except GatewayError as exc:
        return _error(exc.code, exc.details)
    if on_request is not None:
        on_request(grpc_method)
    if client_streams:
        return _stream_pieces(handler.stream_stream, _iterate(requests))
    return _stream_pieces(handler.unary_stream, requests[0])


async def _iterate(requests: list[Message]) -> AsyncIterator[Message]:
    for request in requests:
        yield request


async def _run_stream(behaviour: Any, request: Any, context: StreamContext) -> None:
    """Runs a streaming servicer method; its status is left on the context and None queued
    after its last response."""
    result = None
    try:
        result = behaviour(request, context)
        await send_responses(result, context.write)
    except asyncio.CancelledError:
        if hasattr(result, "aclose"):
            await result.aclose()  # cancelled while it waited on write: end it now, not at GC
        raise
    except GatewayError as exc:
        context.code, context.details = exc.code, exc.details
    except Exception as exc:  # what grpc.aio reports for a handler that raised
        context.code, context.details = _C.UNKNOWN, f"Unexpected {type(exc)}: {exc}"
    await context.responses.put(None)  # not reached when cancelled: nobody is reading then


async def _stream_pieces(behaviour: Any, request: Any) -> AsyncGenerator[bytes, None]:
    """The chunked response of one streaming call, piece by piece. Closing the generator (the
    client left) cancels the servicer."""
    context = StreamContext()
    task = asyncio.create_task(_run_stream(behaviour, request, context))
    head_sent = False
    try:
        while (response := await context.responses.get()) is not None:
            piece = _chunk(b'{"result":' + to_json(response) + b"}\n")
            if not head_sent:
                piece, head_sent = _stream_head(200, with_grpc_headers=True) + piece, True
            yield piece
        end = b""
        status = 200
        if context.code != _C.OK:
            status = HTTP_STATUS.get(context.code, 500)
            end = _chunk(_dumps({"error": _stream_error(context.code, context.details)}))
        end += b"0\r\n\r\n"
        yield end if head_sent else _stream_head(status, with_grpc_headers=False) + end
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def _stream_error(code: grpc.StatusCode, details: str) -> dict[str, Any]:
    """grpc-gateway's StreamError as its jsonpb writes it: fields at their defaults omitted."""
    http_code = HTTP_STATUS.get(code, 500)
    error: dict[str, Any] = {"grpc_code": code.value[0], "http_code": http_code}
    if details:
        error["message"] = details
    error["http_status"] = HTTPStatus(http_code).phrase
    return error


def _stream_head(status: int, *, with_grpc_headers: bool) -> bytes:
    # The Grpc-Metadata header carries the gRPC response headers, which come with the first
    # message (a stream that ends before any has none).
    grpc_headers = "Grpc-Metadata-Content-Type: application/grpc\r\n" if with_grpc_headers else ""
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n{COMMON_HEADERS}"
        f"Content-Type: application/json\r\n{grpc_headers}"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
