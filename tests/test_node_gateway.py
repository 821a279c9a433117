"""etcd's JSON gateway on the client port (POST /v3/kv/range and friends), differentially.

One etcd 3.4.23 and one petra node serve the whole module (`pair`). Each test sends the same
HTTP/1.1 requests with urllib to both and compares the status and the JSON body after
removing what identifies a member (cluster_id, member_id, raft_term, member URLs, database
sizes). Both nodes get exactly the same writes in the same order, so revisions match; every
test keeps to its own key prefix. Lease IDs are chosen by the requests (LeaseGrant's ID) so
lock and election keys, which embed the lease in hex, match too.

The streaming paths (watch, lease keep-alive, election observe, snapshot) are read with a
raw socket that undoes the chunked encoding, so a test can read the first messages of a stream
that never ends (a watch) and compare them message by message.

Petra-only tests at the end check what etcd does differently on purpose (oversized bodies are
refused before they are read) and what cannot be compared (snapshot bytes, cleanup after a
client leaves).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import pathlib
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from api.etcdserverpb import rpc_pb2
from server import gateway
from tests import nodes
from tests.nodes import Node

TIMEOUT_S = 10.0
IDENTITIES = ("cluster_id", "member_id", "raft_term")
# Status fields that differ between any two members (sizes, indexes, identities).
STATUS_VARIES = ("dbSize", "dbSizeInUse", "leader", "raftIndex", "raftTerm", "raftAppliedIndex")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    base: pathlib.Path = tmp_path_factory.mktemp("gateway")
    with nodes.running("etcd", base) as etcd, nodes.running("petra", base) as petra:
        yield etcd, petra


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def post(node: Node, path: str, body: Any, method: str = "POST") -> tuple[int, Any]:
    """(status, JSON body or text) of one request; `body` is JSON-encoded unless bytes."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{node.url}{path}", data=data if method == "POST" else None, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def normalize(value: Any) -> Any:
    """Drops member identities wherever a response header carries them."""
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items() if k not in IDENTITIES}
    if isinstance(value, list | tuple):
        return type(value)(normalize(v) for v in value)
    return value


def both(pair: tuple[Node, Node], path: str, body: Any, method: str = "POST") -> Any:
    """Sends the request to etcd, then petra; asserts equal answers; returns etcd's."""
    etcd, petra = pair
    expected = post(etcd, path, body, method)
    got = post(petra, path, body, method)
    assert normalize(got) == normalize(expected), f"{method} {path} {body!r}"
    return expected


def test_put_range_deleterange(pair: tuple[Node, Node]) -> None:
    """Put (with prev_kv), Range by key, by prefix, with limit, at an older revision, counting
    and keys only, then DeleteRange with prev_kv: same status and JSON on both."""
    put = both(pair, "/v3/kv/put", {"key": b64("kv/a"), "value": b64("1")})
    first_rev = put[1]["header"]["revision"]
    both(pair, "/v3/kv/put", {"key": b64("kv/a"), "value": b64("2"), "prev_kv": True})
    both(pair, "/v3/kv/put", {"key": b64("kv/b"), "value": b64("3"), "lease": "0"})
    both(pair, "/v3/kv/range", {"key": b64("kv/a")})
    prefix = {"key": b64("kv/"), "range_end": b64("kv0")}
    status, body = both(pair, "/v3/kv/range", prefix)
    assert status == 200 and body["count"] == "2"
    both(pair, "/v3/kv/range", {**prefix, "limit": "1"})
    both(pair, "/v3/kv/range", {**prefix, "limit": 1, "sort_order": "DESCEND"})
    status, body = both(pair, "/v3/kv/range", {**prefix, "revision": first_rev})
    assert status == 200 and body["kvs"][0]["value"] == b64("1")
    both(pair, "/v3/kv/range", {**prefix, "count_only": True})
    both(pair, "/v3/kv/range", {**prefix, "keys_only": True, "serializable": True})
    both(pair, "/v3/kv/range", {"key": b64("kv/missing")})
    both(pair, "/v3/kv/deleterange", {**prefix, "prev_kv": True})
    both(pair, "/v3/kv/deleterange", {"key": b64("kv/a")})


def test_txn_compare_success_failure(pair: tuple[Node, Node]) -> None:
    """A Txn whose compare holds runs `success`, one whose compare fails runs `failure`
    (a put and a delete), with the nested response headers etcd fills."""
    both(pair, "/v3/kv/put", {"key": b64("txn/k"), "value": b64("v1")})
    compare = {"key": b64("txn/k"), "result": "EQUAL", "target": "VALUE"}
    ops = {
        "success": [{"request_range": {"key": b64("txn/k")}}],
        "failure": [
            {"request_put": {"key": b64("txn/k"), "value": b64("v2"), "prev_kv": True}},
            {"request_delete_range": {"key": b64("txn/none")}},
        ],
    }
    status, body = both(pair, "/v3/kv/txn", {"compare": [{**compare, "value": b64("v1")}], **ops})
    assert status == 200 and body["succeeded"] is True
    status, body = both(pair, "/v3/kv/txn", {"compare": [{**compare, "value": b64("no")}], **ops})
    assert status == 200 and "succeeded" not in body  # false is a default: omitted
    both(pair, "/v3/kv/txn", {"compare": [{**compare, "target": "VERSION", "version": "2"}]})
    status, body = both(
        pair,
        "/v3/kv/txn",
        {"success": [{"request_put": {"key": b64("d")}}, {"request_put": {"key": b64("d")}}]},
    )
    assert status == 400 and body["message"] == "etcdserver: duplicate key given in txn request"


def test_request_errors(pair: tuple[Node, Node]) -> None:
    """Errors as etcd's gateway words them: an empty key (400, code 3), a future revision
    (400, code 11), an unknown lease (404, code 5), a bad JSON body (400 with Go's decoder
    message), an unknown /v3/ path (404, text), a GET on a gateway path (405)."""
    status, body = both(pair, "/v3/kv/range", {})
    assert (status, body["code"]) == (400, 3)
    assert body["error"] == body["message"] == "etcdserver: key is not provided"
    both(pair, "/v3/kv/range", b"")
    both(pair, "/v3/kv/range", b"null")
    status, body = both(pair, "/v3/kv/range", {"key": b64("x"), "revision": "1000000"})
    assert (status, body["code"]) == (400, 11)
    status, body = both(pair, "/v3/lease/revoke", {"ID": "424242"})
    assert (status, body["message"]) == (404, "etcdserver: requested lease not found")
    status, body = both(pair, "/v3/kv/range", b"{bad json")
    assert status == 400 and body["code"] == 3
    both(pair, "/v3/kv/range", b'{"key": "eA==",')
    both(pair, "/v3/kv/range", b'{"key" "eA=="}')
    both(pair, "/v3/kv/range", b'{"key": "eA==" "x": 1}')
    both(pair, "/v3/kv/range", b"[]")
    both(pair, "/v3/kv/range", b'{"key": "eA==", "unknown_field": 1}')
    assert both(pair, "/v3/nothing", {}) == (404, "Not Found\n")
    assert both(pair, "/v3/kv/nothing", {}) == (404, "Not Found\n")
    assert both(pair, "/v3/kv/range", None, method="GET") == (405, "Method Not Allowed\n")
    assert both(pair, "/v3/kv/range", None, method="HEAD") == (405, "")
    assert both(pair, "/v3/kv/range", None, method="OPTIONS") == (200, "")
    both(pair, "/v3/kv/range/", {"key": b64("x")})
    both(pair, "/v3/kv/Range", {"key": b64("x")})
    both(pair, "/v3/kv/range?x=1", {"key": b64("x")})


@pytest.mark.parametrize(
    "body",
    [
        b'{"key": 5}',
        b'{"key": "!!!"}',
        b'{"key": "Zm9"}',
        b'{"key": "Z=m9"}',
        b'{"key": "eA==", "limit": true}',
        b'{"key": "eA==", "limit": 1.5}',
        b'{"key": "eA==", "limit": "1.5"}',
        b'{"key": "eA==", "limit": "x"}',
        b'{"key": "eA==", "limit": {}}',
        b'{"key": "eA==", "serializable": "x"}',
        b'{"key": "eA==", "sort_order": "NOPE"}',
        b'{"key": "eA==", "sort_order": true}',
        b'{"key": "eA==", "sortOrder": "DESCEND", "limit": "-3"}',
    ],
)
def test_range_field_errors(pair: tuple[Node, Node], body: bytes) -> None:
    """A field of the wrong form gets Go's jsonpb message (400, code 3) on both; lowerCamel
    names and negative limits are accepted."""
    both(pair, "/v3/kv/range", body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"compare": [{"key": "eA==", "result": "NOPE"}]}',
        b'{"compare": {"key": "eA=="}}',
        b'{"success": [{"request_put": "x"}]}',
    ],
)
def test_txn_field_errors(pair: tuple[Node, Node], body: bytes) -> None:
    """Wrong forms inside repeated and nested fields: Go's messages on both."""
    both(pair, "/v3/kv/txn", body)


@pytest.mark.parametrize(
    ("value_bytes", "expected"), [(1_600_000, (400, 3)), (2_200_000, (429, 8))]
)
def test_large_put(pair: tuple[Node, Node], value_bytes: int, expected: tuple[int, int]) -> None:
    """A value over --max-request-bytes (1.5 MiB): 400 "request is too large"; one whose
    message exceeds the gRPC limit (2 MiB): 429 with gRPC's own message. Their JSON bodies
    (base64) are larger than the message, and still read whole."""
    body = {"key": b64("big"), "value": base64.b64encode(b"x" * value_bytes).decode()}
    status, answer = both(pair, "/v3/kv/put", body)
    assert (status, answer["code"]) == expected


def test_lease_paths(pair: tuple[Node, Node]) -> None:
    """LeaseGrant with a chosen ID, TimeToLive with keys, Leases, Revoke, through both the
    /v3/lease/ paths and etcd's /v3/kv/lease/ aliases."""
    status, body = both(pair, "/v3/lease/grant", {"TTL": "120", "ID": "7001"})
    assert (status, body["ID"], body["TTL"]) == (200, "7001", "120")
    both(pair, "/v3/lease/grant", {"TTL": 120, "ID": "7002"})
    both(pair, "/v3/kv/put", {"key": b64("lease/k"), "value": b64("v"), "lease": "7001"})
    for path in ("/v3/lease/timetolive", "/v3/kv/lease/timetolive"):
        etcd, petra = pair
        answers = [post(n, path, {"ID": "7001", "keys": True}) for n in (etcd, petra)]
        for status, body in answers:
            # The remaining TTL depends on when the request lands; within the grant.
            assert status == 200 and 0 < int(body.pop("TTL")) <= 120
        assert normalize(answers[1]) == normalize(answers[0])
    status, body = both(pair, "/v3/lease/leases", {})
    assert status == 200 and {"ID": "7001"} in body["leases"]
    both(pair, "/v3/kv/lease/leases", {})
    both(pair, "/v3/lease/revoke", {"ID": "7001"})
    both(pair, "/v3/kv/lease/revoke", {"ID": "7002"})
    both(pair, "/v3/kv/lease/revoke", {"ID": "7002"})
    both(pair, "/v3/lease/timetolive", {"ID": "7001"})
    both(pair, "/v3/kv/range", {"key": b64("lease/k")})


def test_maintenance_and_cluster(pair: tuple[Node, Node]) -> None:
    """Status (sizes and indexes removed), Alarm (GET), Defragment, Hash (its value depends
    on the database file, so only its presence is compared), MemberList (URLs removed)."""
    etcd, petra = pair
    statuses = [post(n, "/v3/maintenance/status", {}) for n in (etcd, petra)]
    for status, body in statuses:
        assert status == 200 and body["leader"] == body["header"]["member_id"]
        for name in STATUS_VARIES:
            del body[name]
    assert normalize(statuses[1]) == normalize(statuses[0])
    both(pair, "/v3/maintenance/alarm", {})
    both(pair, "/v3/maintenance/alarm", {"action": "GET"})
    both(pair, "/v3/maintenance/defragment", {})
    hashes = [post(n, "/v3/maintenance/hash", {}) for n in (etcd, petra)]
    for status, body in hashes:
        assert status == 200 and isinstance(body.pop("hash"), int)
    assert normalize(hashes[1]) == normalize(hashes[0])
    members = [post(n, "/v3/cluster/member/list", {}) for n in (etcd, petra)]
    for node, (_status, body) in zip((etcd, petra), members, strict=True):
        (member,) = body["members"]
        assert member.pop("ID") == body["header"]["member_id"]
        assert member.pop("clientURLs") == [node.url]
        assert member.pop("peerURLs") == [f"http://127.0.0.1:{node.peer_port}"]
    assert normalize(members[1]) == normalize(members[0])
    # Each node's own ID: promoting a voter is FAILED_PRECONDITION (412).
    promotes = [
        post(n, "/v3/cluster/member/promote", {"ID": body["header"]["member_id"]})
        for n, (_status, body) in zip((etcd, petra), members, strict=True)
    ]
    assert promotes[1] == promotes[0] and promotes[0][0] == 412
    both(pair, "/v3/cluster/member/remove", {"ID": "12345"})
    both(pair, "/v3/cluster/member/update", {"ID": "12345", "peerURLs": ["http://127.0.0.1:1"]})
    both(pair, "/v3/maintenance/transfer-leadership", {})


def test_lock_unlock(pair: tuple[Node, Node]) -> None:
    """Lock on a chosen lease gives the key name/<lease hex>; Unlock deletes it."""
    both(pair, "/v3/lease/grant", {"TTL": "60", "ID": "8001"})
    status, body = both(pair, "/v3/lock/lock", {"name": b64("lk"), "lease": "8001"})
    assert status == 200 and base64.b64decode(body["key"]) == b"lk/1f41"
    both(pair, "/v3/kv/range", {"key": b64("lk/1f41")})
    both(pair, "/v3/lock/unlock", {"key": body["key"]})
    both(pair, "/v3/kv/range", {"key": b64("lk/1f41")})
    both(pair, "/v3/lock/unlock", {})
    both(pair, "/v3/lease/revoke", {"ID": "8001"})


def test_election(pair: tuple[Node, Node]) -> None:
    """Campaign, Leader, Proclaim, Resign, and Leader of an election nobody leads."""
    both(pair, "/v3/lease/grant", {"TTL": "60", "ID": "9001"})
    status, body = both(
        pair, "/v3/election/campaign", {"name": b64("el"), "value": b64("v1"), "lease": "9001"}
    )
    assert status == 200
    leader = body["leader"]
    both(pair, "/v3/election/leader", {"name": b64("el")})
    both(pair, "/v3/election/proclaim", {"leader": leader, "value": b64("v2")})
    status, body = both(pair, "/v3/election/leader", {"name": b64("el")})
    assert base64.b64decode(body["kv"]["value"]) == b"v2"
    both(pair, "/v3/election/proclaim", {"leader": {**leader, "rev": "1"}, "value": b64("x")})
    both(pair, "/v3/election/resign", {"leader": leader})
    status, body = both(pair, "/v3/election/leader", {"name": b64("el")})
    assert (status, body["message"]) == (500, "election: no leader")
    both(pair, "/v3/lease/revoke", {"ID": "9001"})


def dechunk(chunked: bytes) -> bytes:
    """A whole chunked HTTP/1.1 body, without its framing."""
    data = b""
    while True:
        size_line, _, chunked = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return data
        data, chunked = data + chunked[:size], chunked[size + 2 :]


class StreamReader:
    """One streaming gateway request on a raw socket: the head, then the JSON messages of the
    chunked body one at a time (newline-delimited; grpc-gateway's error chunk has no newline)."""

    def __init__(self, node: Node, path: str, body: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", node.client_port), timeout=TIMEOUT_S)
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        self.sock.sendall(head.encode() + body)
        self.raw = b""  # received, not yet de-chunked
        self.body = b""  # de-chunked, not yet returned as messages
        self.ended = False  # the last chunk (size 0) was read
        while b"\r\n\r\n" not in self.raw:
            self._recv()
        head_bytes, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = dict(line.split(": ", 1) for line in lines[1:])

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise AssertionError(f"connection closed; unparsed: {self.raw[:200]!r}")
        self.raw += data

    def _dechunk(self) -> None:
        while not self.ended and b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            self.body += rest[:size]
            self.raw = rest[size + 2 :]
            self.ended = size == 0

    def next_message(self) -> Any:
        """The next message, or None at the end of the body."""
        while True:
            self._dechunk()
            if b"\n" in self.body:
                line, self.body = self.body.split(b"\n", 1)
                return json.loads(line)
            if self.ended:
                line, self.body = self.body, b""
                return json.loads(line) if line else None
            self._recv()

    def rest(self) -> list[Any]:
        """Every message up to the end of the body (for streams that end)."""
        messages = []
        while (message := self.next_message()) is not None:
            messages.append(message)
        return messages

    def close(self) -> None:
        self.sock.close()


def stream_head(reader: StreamReader) -> tuple[int, dict[str, str]]:
    """The status and the headers that describe the stream (not Date, Connection)."""
    kept = ("Content-Type", "Transfer-Encoding", "Grpc-Metadata-Content-Type")
    return reader.status, {k: v for k, v in reader.headers.items() if k in kept}


def both_streams(pair: tuple[Node, Node], path: str, body: bytes, count: int | None) -> list[Any]:
    """Opens the same stream on etcd and petra; asserts the same head and the same first
    `count` messages (None: every message until the stream ends); returns etcd's."""
    answers = []
    for node in pair:
        reader = StreamReader(node, path, body)
        try:
            if count is None:
                messages = reader.rest()
            else:
                messages = [reader.next_message() for _ in range(count)]
            answers.append((stream_head(reader), normalize(messages)))
        finally:
            reader.close()
    assert answers[1] == answers[0], f"{path} {body!r}"
    return answers[0][1]


def test_watch_stream(pair: tuple[Node, Node]) -> None:
    """A watch over the gateway: created, the replay from start_revision with prev_kv, and an
    event put while the stream is open, message for message as etcd; a second watch with a
    filter and a key range."""
    first = both(pair, "/v3/kv/put", {"key": b64("gw/w/a"), "value": b64("1")})
    start = first[1]["header"]["revision"]
    both(pair, "/v3/kv/put", {"key": b64("gw/w/a"), "value": b64("2")})
    both(pair, "/v3/kv/deleterange", {"key": b64("gw/w/a")})
    create = {"key": b64("gw/w/"), "range_end": b64("gw/w0"), "start_revision": start}
    request = json.dumps({"create_request": {**create, "prev_kv": True}}).encode()
    messages = both_streams(pair, "/v3/watch", request, 2)  # the replay is one response
    assert messages[0]["result"]["created"] is True
    assert [e.get("type", "PUT") for e in messages[1]["result"]["events"]] == [
        "PUT", "PUT", "DELETE"
    ]  # fmt: skip
    readers = [StreamReader(node, "/v3/watch", request) for node in pair]
    try:
        for reader in readers:
            [reader.next_message() for _ in range(2)]
        put = both(pair, "/v3/kv/put", {"key": b64("gw/w/b"), "value": b64("3")})
        live = [normalize(reader.next_message()) for reader in readers]
        assert live[1] == live[0]
        assert live[0]["result"]["events"][0]["kv"]["mod_revision"] == put[1]["header"]["revision"]
    finally:
        for reader in readers:
            reader.close()
    filtered = {**create, "filters": ["NOPUT"]}
    messages = both_streams(pair, "/v3/watch", json.dumps({"create_request": filtered}).encode(), 2)
    assert messages[1]["result"]["events"][0]["type"] == "DELETE"


def test_watch_stream_request_errors(pair: tuple[Node, Node]) -> None:
    """A first request that does not parse is a plain error (500, code 2: the gateway passes
    the decoder's error on as it is); a later one only ends the client's side, so the watch
    created by the first goes on."""
    for body in (b"xx", b'{"create_request": {"key": 5}}', b"[1]"):
        both(pair, "/v3/watch", body)
    create = json.dumps({"create_request": {"key": b64("gw/e/k")}}).encode()
    messages = both_streams(pair, "/v3/watch", create + b' {"bad json', 1)
    assert messages[0]["result"]["created"] is True


def test_lease_keepalive_stream(pair: tuple[Node, Node]) -> None:
    """Keep-alive over the gateway: one answer per request in the body, then the stream ends
    (the client's side ended); an unknown lease answers TTL 0 (omitted); an empty body ends at
    once; a bad first request is an error, a bad later one ends the stream early."""
    both(pair, "/v3/lease/grant", {"TTL": "60", "ID": "7001"})
    messages = both_streams(pair, "/v3/lease/keepalive", b'{"ID": "7001"} {"ID": 7001}', None)
    assert [m["result"].get("TTL") for m in messages] == ["60", "60"]
    messages = both_streams(pair, "/v3/lease/keepalive", b'{"ID": "7002"}', None)
    assert "TTL" not in messages[0]["result"]
    assert both_streams(pair, "/v3/lease/keepalive", b"", None) == []
    assert len(both_streams(pair, "/v3/lease/keepalive", b'{"ID": 7001} {"ID": x}', None)) == 1
    both(pair, "/v3/lease/keepalive", b'{"ID": "x"}')
    both(pair, "/v3/lease/revoke", {"ID": "7001"})


def test_election_observe_stream(pair: tuple[Node, Node]) -> None:
    """Observe over the gateway: the current leader's key first, then each proclamation."""
    both(pair, "/v3/lease/grant", {"TTL": "60", "ID": "9101"})
    status, body = both(
        pair, "/v3/election/campaign", {"name": b64("gw-el"), "value": b64("v1"), "lease": "9101"}
    )
    leader = body["leader"]
    observe = json.dumps({"name": b64("gw-el")}).encode()
    messages = both_streams(pair, "/v3/election/observe", observe, 1)
    assert base64.b64decode(messages[0]["result"]["kv"]["value"]) == b"v1"
    readers = [StreamReader(node, "/v3/election/observe", observe) for node in pair]
    try:
        for reader in readers:
            reader.next_message()
        both(pair, "/v3/election/proclaim", {"leader": leader, "value": b64("v2")})
        seen = [normalize(reader.next_message()) for reader in readers]
        assert seen[1] == seen[0]
        assert base64.b64decode(seen[0]["result"]["kv"]["value"]) == b"v2"
    finally:
        for reader in readers:
            reader.close()
    both(pair, "/v3/election/observe", b'{"name": 5}')
    both(pair, "/v3/lease/revoke", {"ID": "9101"})


def test_compaction_last(pair: tuple[Node, Node]) -> None:
    """Compaction, then a Range below it (400, code 11, compacted), compacting the same
    revision again, and a gateway watch from below it (cancelled with the compact revision).
    Last in the module: it removes the history the other tests read."""
    status, body = both(pair, "/v3/kv/put", {"key": b64("compact/k"), "value": b64("v")})
    revision = int(body["header"]["revision"])
    both(pair, "/v3/kv/compaction", {"revision": str(revision - 1), "physical": True})
    status, body = both(pair, "/v3/kv/range", {"key": b64("compact/k"), "revision": "2"})
    assert (status, body["code"]) == (400, 11)
    assert body["message"] == "etcdserver: mvcc: required revision has been compacted"
    both(pair, "/v3/kv/compaction", {"revision": str(revision - 1)})
    both(pair, "/v3/kv/range", {"key": b64("compact/k"), "revision": str(revision)})
    # A watch from below the compaction: created, then cancelled with the compact revision.
    watch = {"create_request": {"key": b64("compact/k"), "start_revision": "2"}}
    messages = both_streams(pair, "/v3/watch", json.dumps(watch).encode(), 2)
    assert messages[1]["result"]["canceled"] is True
    assert messages[1]["result"]["compact_revision"] == str(revision - 1)


# --- petra only ------------------------------------------------------------------------------


def raw_http(node: Node, request: bytes) -> bytes:
    """Sends raw bytes, returns everything until the server closes."""
    with socket.create_connection(("127.0.0.1", node.client_port), timeout=TIMEOUT_S) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_snapshot_stream(pair: tuple[Node, Node]) -> None:
    """Snapshot over the gateway (petra's bytes are its own, so not compared with etcd's):
    the blobs put together end in the SHA-256 of what precedes them, as `etcdctl snapshot
    save` checks, and remaining_bytes counts down to the end."""
    reader = StreamReader(pair[1], "/v3/maintenance/snapshot", b"{}")
    try:
        messages = reader.rest()
    finally:
        reader.close()
    assert stream_head(reader)[0] == 200 and len(messages) > 1
    blob = b"".join(base64.b64decode(m["result"]["blob"]) for m in messages)
    assert hashlib.sha256(blob[:-32]).digest() == blob[-32:]
    remaining = [int(m["result"].get("remaining_bytes", "0")) for m in messages]
    assert remaining == sorted(remaining, reverse=True) and remaining[-1] == 0


def metric(node: Node, name: str) -> int:
    """A metric's value from petra's /metrics (0 if absent)."""
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
        text = resp.read().decode()
    found = [x for x in text.splitlines() if x.startswith(name + " ")]
    return int(float(found[0].split()[-1])) if found else 0


def test_watch_ends_when_its_client_leaves(pair: tuple[Node, Node]) -> None:
    """A gateway watch whose client closes the connection is cancelled: petra's watcher count
    goes back to what it was."""
    petra = pair[1]
    before = metric(petra, "etcd_debugging_mvcc_watcher_total")
    readers = [
        StreamReader(petra, "/v3/watch", b'{"create_request": {"key": "bGVhdmU="}}')
        for _ in range(3)
    ]
    for reader in readers:
        assert reader.next_message()["result"]["created"] is True
    assert metric(petra, "etcd_debugging_mvcc_watcher_total") == before + 3
    for reader in readers:
        reader.close()
    nodes.wait_for(
        lambda: metric(petra, "etcd_debugging_mvcc_watcher_total") == before,
        TIMEOUT_S,
        "the watchers of closed gateway streams to be cancelled",
    )


def test_chunked_request_bodies(pair: tuple[Node, Node]) -> None:
    """A chunked request body (as Go's HTTP client sends one of unknown length) works as on
    etcd: a Put split over three chunks, and two keep-alive requests in separate chunks."""
    both(pair, "/v3/lease/grant", {"TTL": "60", "ID": "7101"})
    put = json.dumps({"key": b64("chunked/k"), "value": b64("v" * 100)}).encode()
    keepalive = b'{"ID": "7101"}'
    for path, pieces in (
        ("/v3/kv/put", [put[:1], put[1:50], put[50:]]),
        ("/v3/lease/keepalive", [keepalive, b" " + keepalive]),
    ):
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        answers = []
        for node in pair:
            status_and_head, _, rest = raw_http(node, head.encode() + body).partition(b"\r\n\r\n")
            if b"Transfer-Encoding: chunked" in status_and_head:  # a stream
                rest = dechunk(rest)
            status = status_and_head.split()[1]
            answers.append((status, normalize([json.loads(x) for x in rest.split()])))
        assert answers[1] == answers[0], path
        assert answers[0][0] == b"200"
    both(pair, "/v3/lease/revoke", {"ID": "7101"})


def test_oversized_body_is_refused(pair: tuple[Node, Node]) -> None:
    """A Content-Length over the server's request limit: 413 before any body is read."""
    request = b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n"
    assert raw_http(pair[1], request).startswith(b"HTTP/1.1 413 ")


def test_body_in_many_segments_and_health_unchanged(pair: tuple[Node, Node]) -> None:
    """A body arriving after the head in separate writes is read whole; /health, which has no
    body, still answers."""
    petra = pair[1]
    body = json.dumps({"key": b64("seg/k"), "value": b64("v")}).encode()
    head = f"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", petra.client_port), timeout=TIMEOUT_S) as s:
        s.sendall(head.encode())
        for i in range(len(body)):
            s.sendall(body[i : i + 1])
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["header"]["revision"]
    health = raw_http(petra, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert health.startswith(b"HTTP/1.1 200 ") and health.endswith(b'{"health":"true"}')


def test_gateway_calls_are_counted(pair: tuple[Node, Node]) -> None:
    """A gateway call adds one to petra's per-method request counter, as a gRPC call does
    (etcd's gateway is a gRPC client of its own server)."""
    petra = pair[1]
    line = 'petra_grpc_requests_total{method="/etcdserverpb.Maintenance/Defragment"}'
    before = metric(petra, line)
    assert post(petra, "/v3/maintenance/defragment", {}) == (200, {})
    assert metric(petra, line) == before + 1


# --- the gateway module without a node -------------------------------------------------------


def gateway_answer(behaviour: Any, body: bytes = b'{"key": "eA=="}') -> tuple[int, Any]:
    """Runs gateway.answer for POST /v3/kv/range against a fake Range servicer."""
    handler = grpc.unary_unary_rpc_method_handler(behaviour)

    def lookup(path: str) -> Any:
        return handler if path == "/etcdserverpb.KV/Range" else None

    head = b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = asyncio.run(gateway.answer(lookup, head, body, 1 << 20))
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.split(b"\r\n\r\n", 1)[1])


def test_servicer_outcomes_become_etcd_errors() -> None:
    """A handler that raises is 500/UNKNOWN with grpc.aio's text; abort, and set_code with
    set_details, give their code and the grpc-gateway status; success is the JSON answer."""

    async def raises(request: Any, context: Any) -> Any:
        raise RuntimeError("boom")

    async def aborts(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not learner")

    async def sets_code(request: Any, context: Any) -> Any:
        context.set_code(grpc.StatusCode.UNAVAILABLE)
        context.set_details("etcdserver: leader changed")
        return rpc_pb2.RangeResponse()

    def answers(request: Any, context: Any) -> Any:  # a sync handler is fine too
        assert context.invocation_metadata() == () and not context.cancelled()
        return rpc_pb2.RangeResponse(count=2**40, kvs=[{"key": request.key, "value": b""}])

    error = "Unexpected <class 'RuntimeError'>: boom"
    assert gateway_answer(raises) == (500, {"error": error, "message": error, "code": 2})
    assert gateway_answer(aborts)[0] == 412 and gateway_answer(aborts)[1]["code"] == 9
    assert gateway_answer(sets_code) == (
        503,
        {
            "error": "etcdserver: leader changed",
            "message": "etcdserver: leader changed",
            "code": 14,
        },
    )
    assert gateway_answer(answers) == (200, {"kvs": [{"key": "eA=="}], "count": str(2**40)})


def test_route_without_a_registered_service() -> None:
    """A known path whose service is not registered on the server answers 501 UNIMPLEMENTED."""
    head = b"POST /v3/lock/lock HTTP/1.1\r\n\r\n"
    raw = asyncio.run(gateway.answer(lambda path: None, head, b"{}", 1 << 20))
    assert raw.startswith(b"HTTP/1.1 501 ") and b'"code":12' in raw


def stream_answer(behaviour: Any, body: bytes = b'{"ID": 1}') -> tuple[int, list[Any]]:
    """Runs gateway.answer for POST /v3/lease/keepalive against a fake bidi servicer; returns
    the status and the de-chunked body's JSON values."""
    handler = grpc.stream_stream_rpc_method_handler(behaviour)

    def lookup(path: str) -> Any:
        return handler if path == "/etcdserverpb.Lease/LeaseKeepAlive" else None

    async def collect() -> bytes:
        pieces = await gateway.answer(
            lookup, b"POST /v3/lease/keepalive HTTP/1.1\r\n\r\n", body, 1 << 20
        )
        assert not isinstance(pieces, bytes)
        return b"".join([piece async for piece in pieces])

    raw = asyncio.run(collect())
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked\r\n" in head
    text = dechunk(chunked).decode()
    values, decoder, pos = [], json.JSONDecoder(), 0
    while pos < len(text):
        value, pos = decoder.raw_decode(text, pos)
        values.append(value)
        pos = len(text) - len(text[pos:].lstrip())
    return int(head.split()[1]), values


def test_stream_errors_end_the_stream_as_grpc_gateway_does() -> None:
    """An error before any response sets the HTTP status and is the whole body; after responses
    it follows them (status 200 already sent); both as grpc-gateway's StreamError."""

    async def fails_at_once(requests: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
        yield  # an async generator, as petra's streaming servicers are

    async def fails_after_one(requests: Any, context: Any) -> Any:
        async for request in requests:
            yield rpc_pb2.LeaseKeepAliveResponse(ID=request.ID, TTL=5)
        raise RuntimeError("boom")

    async def writes(requests: Any, context: Any) -> None:  # through context.write
        async for request in requests:
            await context.write(rpc_pb2.LeaseKeepAliveResponse(ID=request.ID))

    no_leader = {"grpc_code": 14, "http_code": 503, "message": "etcdserver: no leader"}
    assert stream_answer(fails_at_once) == (
        503,
        [{"error": {**no_leader, "http_status": "Service Unavailable"}}],
    )
    boom = "Unexpected <class 'RuntimeError'>: boom"
    assert stream_answer(fails_after_one, b'{"ID": 1} {"ID": 2}') == (
        200,
        [
            {"result": {"ID": "1", "TTL": "5"}},
            {"result": {"ID": "2", "TTL": "5"}},
            {"error": {"grpc_code": 2, "http_code": 500, "message": boom,
                       "http_status": "Internal Server Error"}},
        ],
    )  # fmt: skip
    assert stream_answer(writes, b'{"ID": 3}') == (200, [{"result": {"ID": "3"}}])


def test_a_stream_runs_at_most_a_queue_ahead_of_its_reader() -> None:
    """A servicer producing without end is held back once STREAM_QUEUE_MAX responses wait
    for the HTTP side, and is cancelled when the reader closes the stream."""
    produced = 0
    ended = asyncio.Event()

    async def endless(requests: Any, context: Any) -> Any:
        nonlocal produced
        try:
            while True:
                produced += 1
                yield rpc_pb2.LeaseKeepAliveResponse(ID=produced)
        finally:
            ended.set()

    handler = grpc.stream_stream_rpc_method_handler(endless)

    async def scenario() -> None:
        pieces = await gateway.answer(
            lambda path: handler, b"POST /v3/lease/keepalive HTTP/1.1\r\n\r\n", b"", 1 << 20
        )
        assert not isinstance(pieces, bytes)
        first = await pieces.__anext__()
        assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b'"ID":"1"' in first
        for _ in range(100):
            await asyncio.sleep(0)  # let the servicer run as far as it can
        assert produced <= gateway.STREAM_QUEUE_MAX + 2
        await pieces.aclose()
        assert ended.is_set()

    asyncio.run(scenario())
